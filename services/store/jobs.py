"""The job repository: every read and write of jobs, events, trials and idempotency records.

All functions take the caller's :class:`Session` and never commit: the caller decides the
transaction (see ``Database.transaction``). State changes go through :func:`_transition`, the
one place that checks trainforge/states.py's table and writes the matching event.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Table, bindparam, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from services.store import metrics, outbox
from services.store.domain import (
    Event,
    IdempotentResponse,
    Job,
    JobError,
    NewJob,
    Progress,
    Trial,
)
from services.store.rows import owned_row, page
from services.store.tables import AttemptRow, EventRow, IdempotencyRow, JobRow, TrialRow
from trainforge.errors import (
    IllegalTransition,
    JobNotFound,
    JobStateConflict,
    QuotaExceeded,
    Unauthenticated,
)
from trainforge.events import MessageEvent, ProgressEvent, StateEvent
from trainforge.spec import JobKind
from trainforge.states import TERMINAL_STATES, JobState, can_transition

log = logging.getLogger(__name__)

#: States a team's active-job limit counts.
UNFINISHED_STATES = frozenset(JobState) - TERMINAL_STATES
_UNFINISHED = sorted(s.value for s in UNFINISHED_STATES)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- reading -------------------------------------------------------------------------------


def _row(session: Session, job_id: str, team: str | None, *, lock: bool = False) -> JobRow:
    return owned_row(session, JobRow, job_id, team, lock=lock, missing=JobNotFound)


def _trials(session: Session, job_id: str) -> tuple[Trial, ...]:
    rows = session.scalars(
        select(TrialRow).where(TrialRow.job_id == job_id).order_by(TrialRow.trial)
    )
    return tuple(
        Trial(r.trial, r.epoch, r.epochs, dict(r.metrics), r.updated_at) for r in rows
    )


def to_domain(row: JobRow, trials: tuple[Trial, ...] = ()) -> Job:
    progress = (
        Progress(row.progress_epoch, row.progress_epochs)
        if row.progress_epoch is not None and row.progress_epochs is not None
        else None
    )
    error = (
        JobError(row.error_code, row.error_message or "") if row.error_code is not None else None
    )
    return Job(
        id=row.id,
        team=row.team,
        kind=JobKind(row.kind),
        name=row.name,
        state=JobState(row.state),
        spec_uri=row.spec_uri,
        spec_sha256=row.spec_sha256,
        gpus=row.gpus,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=progress,
        metrics=dict(row.metrics or {}),
        error=error,
        trials=trials,
        schedule_id=row.schedule_id,
        resumed_from=row.resumed_from,
    )


def get_job(session: Session, job_id: str, *, team: str | None) -> Job:
    """One job with its sweep trials.

    Args:
        job_id: the job's id.
        team: the caller's team; ``None`` only for internal callers (dispatcher, job events).

    Raises:
        JobNotFound: no such job, or it belongs to another team.
    """
    row = _row(session, job_id, team)
    return to_domain(row, _trials(session, job_id) if row.kind == JobKind.SWEEP else ())


def list_jobs(
    session: Session,
    team: str,
    *,
    states: Collection[JobState] = (),
    kind: JobKind | None = None,
    name: str | None = None,
    limit: int = 50,
    before_seq: int | None = None,
) -> tuple[list[Job], int | None]:
    """A page of a team's jobs, newest first (``name``: only jobs of that model name).

    Returns:
        The jobs and the cursor of the next page (``None`` on the last page).
    """
    query = select(JobRow).where(JobRow.team == team)
    if states:
        query = query.where(JobRow.state.in_([s.value for s in states]))
    if kind is not None:
        query = query.where(JobRow.kind == kind.value)
    if name is not None:
        query = query.where(JobRow.name == name)
    if before_seq is not None:
        query = query.where(JobRow.seq < before_seq)
    rows, next_seq = page(session, query.order_by(JobRow.seq.desc()), limit,
                          lambda r: r.seq)
    trials: dict[str, list[Trial]] = {}
    sweep_ids = [r.id for r in rows if r.kind == JobKind.SWEEP]
    if sweep_ids:
        for t in session.scalars(
            select(TrialRow).where(TrialRow.job_id.in_(sweep_ids)).order_by(TrialRow.trial)
        ):
            trials.setdefault(t.job_id, []).append(
                Trial(t.trial, t.epoch, t.epochs, dict(t.metrics), t.updated_at)
            )
    return [to_domain(r, tuple(trials.get(r.id, ()))) for r in rows], next_seq


# Statements of the submission hot path, built once with bound parameters: building them per
# call (coercions, cache keys) costs more CPU than the database round trip.
_JOBS = cast(Table, JobRow.__table__)
_IDEMPOTENCY = cast(Table, IdempotencyRow.__table__)
_COUNT_UNFINISHED = select(func.count()).where(
    _JOBS.c.team == bindparam("team"), _JOBS.c.state.in_(_UNFINISHED)
)
_FIND_IDEMPOTENT = select(
    _IDEMPOTENCY.c.job_id,
    _IDEMPOTENCY.c.request_sha256,
    _IDEMPOTENCY.c.status_code,
    _IDEMPOTENCY.c.response,
).where(_IDEMPOTENCY.c.team == bindparam("team"), _IDEMPOTENCY.c.key == bindparam("key"))
_INSERT_JOB = insert(_JOBS)
_INSERT_EVENT = insert(cast(Table, EventRow.__table__))
_INSERT_IDEMPOTENCY = insert(_IDEMPOTENCY)


def count_unfinished(session: Session, team: str) -> int:
    """How many of a team's jobs are not yet in a terminal state."""
    return int(session.connection().execute(_COUNT_UNFINISHED, {"team": team}).scalar_one())


def count_by_state(session: Session) -> dict[JobState, int]:
    """Jobs currently in each state, across teams (the ``trainforge_jobs`` gauge)."""
    counts = dict.fromkeys(JobState, 0)
    for state, n in session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)):
        counts[JobState(state)] = int(n)
    return counts


def best_metrics(session: Session, job_ids: Collection[str], metric: str) -> dict[str, float]:
    """The highest finite ``metric`` that any progress event (any trial) of each job reported:
    a job's best epoch, which its latest metrics are not."""
    best: dict[str, float] = {}
    if not job_ids:
        return best
    rows = session.execute(
        select(EventRow.job_id, EventRow.data)
        .where(EventRow.job_id.in_(list(job_ids)), EventRow.type == "progress")
    )
    for job_id, data in rows:
        value = ((data or {}).get("metrics") or {}).get(metric)
        if isinstance(value, int | float) and math.isfinite(value) \
                and value > best.get(job_id, -math.inf):
            best[job_id] = float(value)
    return best


def list_events(
    session: Session, job_id: str, *, after_id: int = 0, limit: int = 500
) -> list[Event]:
    """A job's events in the order they happened, after event ``after_id``."""
    rows = session.scalars(
        select(EventRow)
        .where(EventRow.job_id == job_id, EventRow.id > after_id)
        .order_by(EventRow.id)
        .limit(limit)
    )
    return [
        Event(
            id=r.id,
            job_id=r.job_id,
            time=r.time,
            type=r.type,
            from_state=JobState(r.from_state) if r.from_state else None,
            to_state=JobState(r.to_state) if r.to_state else None,
            reason=r.reason,
            attempt=r.attempt,
            trial=r.trial,
            data=dict(r.data or {}),
        )
        for r in rows
    ]


# --- writing -------------------------------------------------------------------------------


_MAX_CONNECTIONS: dict[str, int] = {}


def concurrent_transactions_bound(session: Session) -> int:
    """The most transactions that can be in flight at once on this database.

    PostgreSQL: ``max_connections`` (every transaction holds a server connection; the
    creation function, migration 0003, reads the same setting server-side). SQLite: 1
    (transactions are serialised).
    """
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        return 1
    key = str(bind.engine.url)
    if key not in _MAX_CONNECTIONS:
        _MAX_CONNECTIONS[key] = int(session.execute(text("SHOW max_connections")).scalar_one())
    return _MAX_CONNECTIONS[key]


def new_job(new: NewJob, now: datetime) -> Job:
    """The QUEUED job that creating ``new`` at ``now`` makes (what the insert writes)."""
    return Job(
        id=new.id,
        team=new.team,
        kind=new.kind,
        name=new.name,
        state=JobState.QUEUED,
        spec_uri=new.spec_uri,
        spec_sha256=new.spec_sha256,
        gpus=new.gpus,
        attempts=0,
        max_attempts=new.max_attempts,
        created_at=now,
        updated_at=now,
        started_at=None,
        finished_at=None,
        progress=new.progress,
        metrics={},
        error=None,
        schedule_id=new.schedule_id,
        resumed_from=new.resumed_from,
    )


def _submitted_reason(new: NewJob) -> str:
    if new.resumed_from:
        return f"resumed from job {new.resumed_from}"
    return f"submitted by schedule {new.schedule_id}" if new.schedule_id else "submitted"


class AlreadyResumed(Exception):
    """The job a new job would resume was resumed by another one first (the unique
    ``jobs.resumed_from``, migration 0005). Nothing was written."""


#: The unique index behind :class:`AlreadyResumed`.
_RESUMED_FROM_INDEX = "ix_jobs_resumed_from"


def _already_resumed(exc: DBAPIError) -> bool:
    """Whether ``exc`` is the unique ``jobs.resumed_from`` refusing a second resumption."""
    if isinstance(exc.orig, psycopg.errors.UniqueViolation):
        return exc.orig.diag.constraint_name == _RESUMED_FROM_INDEX
    # sqlite3 names the column, not the index: "UNIQUE constraint failed: jobs.resumed_from".
    return "UNIQUE constraint failed: jobs.resumed_from" in str(exc.orig)


def resumed_by(session: Session, job_id: str, *, team: str) -> str | None:
    """The id of the team's job that resumed ``job_id``, if one did (the unique index)."""
    return session.scalar(
        select(JobRow.id).where(JobRow.resumed_from == job_id, JobRow.team == team)
    )


def insert_job(session: Session, new: NewJob, *, now: datetime | None = None) -> Job:
    """Create a QUEUED job and its first event. The spec must already be written.

    No lock and no limit check: SQLite's creation path (whose transactions are serialised)
    and tests use it; on PostgreSQL, jobs are created by :func:`insert_job_within_limit`.

    Core INSERTs rather than ORM objects: nothing else in the transaction needs the rows as
    objects.

    Raises:
        AlreadyResumed: ``new`` resumes a job that another job resumed first.
    """
    now = now or utcnow()
    connection = session.connection()
    try:
        connection.execute(
            _INSERT_JOB,
            {
                "id": new.id,
                "team": new.team,
                "kind": new.kind.value,
                "name": new.name,
                "state": JobState.QUEUED.value,
                "spec_uri": new.spec_uri,
                "spec_sha256": new.spec_sha256,
                "gpus": new.gpus,
                "attempts": 0,
                "max_attempts": new.max_attempts,
                "created_at": now,
                "updated_at": now,
                "metrics": {},
                "schedule_id": new.schedule_id,
                "resumed_from": new.resumed_from,
                "progress_epoch": new.progress.epoch if new.progress else None,
                "progress_epochs": new.progress.epochs if new.progress else None,
            },
        )
    except DBAPIError as exc:
        if _already_resumed(exc):
            raise AlreadyResumed() from None
        raise
    connection.execute(
        _INSERT_EVENT,
        {
            "job_id": new.id,
            "time": now,
            "type": "state",
            "to_state": JobState.QUEUED.value,
            "reason": _submitted_reason(new),
        },
    )
    metrics.observe(session, metrics.Submitted(new.kind.value, new.team))
    return new_job(new, now)


# --- PostgreSQL: a job's creation in one statement (migration 0003) -----------------------


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first response to a team's Idempotency-Key, stored with the job it created."""

    key: str
    request_sha256: str
    status_code: int
    response: dict[str, Any]


class NearLimit(Exception):
    """The shared lock cannot prove the active-job limit holds: retry with the exclusive lock.

    Nothing was written (the statement failed, and with it its transaction's writes).
    """


class IdempotencyKeyTaken(Exception):
    """The team's Idempotency-Key already has a record (a retry, or a concurrent duplicate
    that committed first). Nothing was written: replay the record."""


#: SQLSTATEs trainforge_create_job() raises, and the idempotency records' primary key.
_NEAR_LIMIT_STATE = "TF001"
_AT_LIMIT_STATE = "TF002"
_IDEMPOTENCY_PK = "pk_idempotency_keys"
#: integer parameters of the function (a limit above it is no limit at all).
_INT_MAX = 2**31 - 1

# Every parameter cast: psycopg sends Python ints as int2/int4/int8 by value and strings
# untyped; casts keep the function's resolution independent of the values.
_CREATE_JOB = (
    "SELECT trainforge_create_job(%(team)s::text, %(exclusive)s::boolean, "
    "%(max_active)s::integer, %(unfinished)s::text[], %(id)s::text, %(kind)s::text, "
    "%(name)s::text, %(spec_uri)s::text, %(spec_sha256)s::text, %(gpus)s::integer, "
    "%(max_attempts)s::integer, %(now)s::timestamptz, %(schedule_id)s::text, "
    "%(reason)s::text, %(key)s::text, %(request_sha256)s::text, %(status_code)s::integer, "
    "%(response)s::json)"
)


def _create_params(new: NewJob, now: datetime, max_active: int, exclusive: bool,
                   idempotency: IdempotencyRecord | None) -> dict[str, Any]:
    return {
        "team": new.team,
        "exclusive": exclusive,
        "max_active": min(max_active, _INT_MAX),
        "unfinished": _UNFINISHED,
        "id": new.id,
        "kind": new.kind.value,
        "name": new.name,
        "spec_uri": new.spec_uri,
        "spec_sha256": new.spec_sha256,
        "gpus": new.gpus,
        "max_attempts": new.max_attempts,
        "now": now,
        "schedule_id": new.schedule_id,
        "reason": _submitted_reason(new),
        "key": idempotency.key if idempotency else None,
        "request_sha256": idempotency.request_sha256 if idempotency else None,
        "status_code": idempotency.status_code if idempotency else None,
        "response": json.dumps(idempotency.response) if idempotency else None,
    }


def _refusal(exc: BaseException | None, team: str, max_active: int) -> Exception | None:
    """The domain error for a refusal the function (or the idempotency key) answered with."""
    if not isinstance(exc, psycopg.Error):
        return None
    if exc.sqlstate == _NEAR_LIMIT_STATE:
        return NearLimit()
    if exc.sqlstate == _AT_LIMIT_STATE:
        return QuotaExceeded(
            f"team {team!r} has {exc.diag.message_detail} unfinished jobs, its limit is "
            f"{max_active}; retry when some finish or cancel one"
        )
    if (isinstance(exc, psycopg.errors.UniqueViolation)
            and exc.diag.constraint_name == _IDEMPOTENCY_PK):
        return IdempotencyKeyTaken()
    return None


def insert_job_within_limit(
    session: Session,
    new: NewJob,
    *,
    max_active: int,
    exclusive: bool,
    idempotency: IdempotencyRecord | None = None,
    now: datetime | None = None,
) -> Job:
    """PostgreSQL: create a QUEUED job, its first event and ``idempotency``'s record under the
    team's advisory lock, if the active-job limit allows it, in one statement of the caller's
    transaction (services/store/submission.py explains the lock modes).

    Raises:
        NearLimit: ``exclusive`` was false and the shared lock cannot prove the limit holds.
        QuotaExceeded: the team is at ``max_active`` unfinished jobs.
        IdempotencyKeyTaken: ``idempotency.key`` already has a record for the team.
        AlreadyResumed: ``new`` resumes a job that another job resumed first.
    """
    now = now or utcnow()
    try:
        session.connection().exec_driver_sql(
            _CREATE_JOB, _create_params(new, now, max_active, exclusive, idempotency)
        )
    except DBAPIError as exc:
        refusal = _refusal(exc.orig, new.team, max_active)
        if refusal is None:
            raise
        raise refusal from None
    if new.resumed_from is not None:
        _link_resumed(session, new)
    metrics.observe(session, metrics.Submitted(new.kind.value, new.team))
    return new_job(new, now)


def _link_resumed(session: Session, new: NewJob) -> None:
    """PostgreSQL: the columns of a resumed job that trainforge_create_job() (migration 0003)
    does not take, set in the same transaction as the job's creation.

    Raises:
        AlreadyResumed: another job resumed ``new.resumed_from`` first.
    """
    try:
        session.connection().execute(
            update(_JOBS).where(_JOBS.c.id == new.id).values(
                resumed_from=new.resumed_from,
                progress_epoch=new.progress.epoch if new.progress else None,
                progress_epochs=new.progress.epochs if new.progress else None,
            )
        )
    except DBAPIError as exc:
        if _already_resumed(exc):
            raise AlreadyResumed() from None
        raise


async def insert_job_within_limit_async(
    conn: psycopg.AsyncConnection[Any],
    new: NewJob,
    *,
    max_active: int,
    exclusive: bool,
    idempotency: IdempotencyRecord | None = None,
    now: datetime | None = None,
) -> Job:
    """:func:`insert_job_within_limit` as one autocommit statement on ``conn`` (committed when
    it returns: one round trip). The caller counts the submission in the metrics.

    Raises:
        NearLimit, QuotaExceeded, IdempotencyKeyTaken: as :func:`insert_job_within_limit`.
        ValueError: ``new`` is a resumed job (its link is written in the job's transaction,
            which one autocommit statement cannot hold: create it with submission.create_job).
    """
    if new.resumed_from is not None:
        raise ValueError("a resumed job is created by submission.create_job, not in autocommit")
    now = now or utcnow()
    try:
        await conn.execute(
            _CREATE_JOB, _create_params(new, now, max_active, exclusive, idempotency)
        )
    except psycopg.Error as exc:
        refusal = _refusal(exc, new.team, max_active)
        if refusal is None:
            raise
        raise refusal from None
    return new_job(new, now)


def find_idempotent(session: Session, team: str, key: str) -> IdempotentResponse | None:
    row = session.connection().execute(_FIND_IDEMPOTENT, {"team": team, "key": key}).first()
    if row is None:
        return None
    return IdempotentResponse(row.job_id, row.request_sha256, row.status_code, dict(row.response))


_FIND_IDEMPOTENT_SQL = (
    "SELECT job_id, request_sha256, status_code, response FROM idempotency_keys "
    "WHERE team = %(team)s::text AND key = %(key)s::text"
)


async def find_idempotent_async(
    conn: psycopg.AsyncConnection[Any], team: str, key: str
) -> IdempotentResponse | None:
    """:func:`find_idempotent` on an autocommit async connection (PostgreSQL)."""
    cursor = await conn.execute(_FIND_IDEMPOTENT_SQL, {"team": team, "key": key})
    row = await cursor.fetchone()
    if row is None:
        return None
    job_id, request_sha256, status_code, response = row
    return IdempotentResponse(job_id, request_sha256, status_code, dict(response))


def remember_idempotent(
    session: Session,
    team: str,
    key: str,
    *,
    request_sha256: str,
    job_id: str,
    status_code: int,
    response: dict[str, Any],
) -> None:
    """Store the first response to an Idempotency-Key in the caller's transaction.

    A concurrent duplicate makes the commit (or this flush) fail with an IntegrityError on the
    (team, key) primary key: the caller then reads the winner's record.
    """
    session.connection().execute(
        _INSERT_IDEMPOTENCY,
        {
            "team": team,
            "key": key,
            "request_sha256": request_sha256,
            "job_id": job_id,
            "status_code": status_code,
            "response": response,
            "created_at": utcnow(),
        },
    )


def _event(
    session: Session,
    row: JobRow,
    type_: str,
    reason: str = "",
    *,
    now: datetime,
    trial: str | None = None,
    data: dict[str, Any] | None = None,
    attempt: int | None = None,
) -> None:
    session.add(
        EventRow(
            job_id=row.id,
            time=now,
            type=type_,
            reason=reason,
            attempt=attempt if attempt is not None else (row.attempts or None),
            trial=trial,
            data=data,
        )
    )


def transition(
    session: Session, row: JobRow, target: JobState, reason: str, *, now: datetime | None = None
) -> None:
    """Move a (locked) job row to ``target`` and record the change as an event.

    The one place that enforces ALLOWED_TRANSITIONS; timestamps follow the state, and a
    terminal state's webhook event is written with it (services/store/outbox.py).

    Raises:
        IllegalTransition: the table does not allow current → target.
    """
    now = now or utcnow()
    source = JobState(row.state)
    if not can_transition(source, target):
        raise IllegalTransition(
            f"job {row.id} cannot go from {source} to {target} ({reason})"
        )
    row.state = target.value
    row.updated_at = now
    if target is JobState.STARTING and row.started_at is None:
        row.started_at = now
    if target.terminal:
        row.finished_at = now
        row.retry_at = None
    if target is JobState.SUCCEEDED:
        row.error_code = row.error_message = None
    session.add(
        EventRow(
            job_id=row.id,
            time=now,
            type="state",
            from_state=source.value,
            to_state=target.value,
            reason=reason,
            attempt=row.attempts or None,
        )
    )
    metrics.observe(
        session,
        metrics.Transitioned(row.kind, source, target, now, row.created_at, row.started_at),
    )
    # What tools hear about (webhooks) is derived here, in the same transaction.
    outbox.job_finished(session, row, target, now)
    log.info("job %s: %s -> %s (%s)", row.id, source, target, reason)


def request_cancel(session: Session, job_id: str, *, team: str, reason: str) -> Job:
    """Cancel a job: a queued one at once, a launched one through CANCELLING.

    Raises:
        JobNotFound: no such job for this team.
        JobStateConflict: the job already finished.
    """
    row = _row(session, job_id, team, lock=True)
    state = JobState(row.state)
    if state is JobState.QUEUED:
        transition(session, row, JobState.CANCELLED, reason)
    elif state in (JobState.STARTING, JobState.RUNNING, JobState.RETRYING):
        transition(session, row, JobState.CANCELLING, reason)
    elif state.terminal:
        raise JobStateConflict(
            f"job {job_id} already {state}; only queued or running jobs can be cancelled"
        )
    return get_job(session, job_id, team=team)


def apply_reported_event(
    session: Session,
    job_id: str,
    event: ProgressEvent | StateEvent | MessageEvent,
    *,
    attempt: int | None = None,
) -> None:
    """Record what a running job reported (the internal events route).

    Progress moves a STARTING job to RUNNING and updates the latest epoch/metrics (or the
    trial's); RUNNING and SUCCEEDED move the job when the table allows it; FAILED only records
    the error: the dispatcher decides between RETRYING and FAILED when the run exits.

    The route checks the job token first (services/store/tokens.py ``verify_job_token``), in
    its own transaction; the job may end between that check and this one, so the same rule is
    applied again here, on the locked row: nothing is recorded for a finished job, nor for an
    attempt that is no longer current or has been settled.

    Args:
        job_id: the job.
        event: what it reported.
        attempt: the attempt the caller's token belongs to; ``None`` skips the attempt check
            (the job-level one always applies).

    Raises:
        JobNotFound: no such job.
        Unauthenticated: the job (or ``attempt``) has ended since the token was checked.
    """
    row = _row(session, job_id, None, lock=True)
    now = utcnow()
    state = JobState(row.state)
    if state.terminal:
        raise Unauthenticated(f"job {job_id} is {state}; its job tokens are no longer valid")
    if attempt is not None:
        current = session.get(AttemptRow, (job_id, attempt))
        if attempt != row.attempts or current is None or current.finished_at is not None:
            raise Unauthenticated(
                f"attempt {attempt} of job {job_id} has ended; its job token is no longer valid"
            )
    if isinstance(event, ProgressEvent):
        data: dict[str, Any] = {
            "epoch": event.epoch,
            "epochs": event.epochs,
            "metrics": dict(event.metrics),
        }
        _event(session, row, "progress", now=now, trial=event.trial, data=data,
               attempt=event.attempt)
        if event.trial is None:
            row.progress_epoch, row.progress_epochs = event.epoch, event.epochs
            row.metrics = dict(event.metrics)
        else:
            _upsert_trial(session, job_id, event, now)
        row.updated_at = now
        if state is JobState.STARTING:
            transition(session, row, JobState.RUNNING, "first progress reported", now=now)
    elif isinstance(event, StateEvent):
        target = JobState(event.state)
        if target is JobState.FAILED:
            row.error_code = event.error_code or "job_failed"
            row.error_message = event.reason or "the job reported a failure"
            row.updated_at = now
            _event(session, row, "message", f"job reported failure: {row.error_message}",
                   now=now, data={"error_code": row.error_code})
        elif target is state:
            pass  # e.g. RUNNING after the backend already reported the run started
        elif can_transition(state, target) and (
            target is JobState.SUCCEEDED or state is JobState.STARTING
        ):
            transition(session, row, target, event.reason or "reported by the job", now=now)
        else:
            _event(session, row, "message",
                   f"job reported {target} while {state}" + (f": {event.reason}"
                                                              if event.reason else ""),
                   now=now)
    else:
        _event(session, row, "message", event.message, now=now, data=dict(event.data))


def _upsert_trial(session: Session, job_id: str, event: ProgressEvent, now: datetime) -> None:
    assert event.trial is not None  # checked by the caller
    # The job row is locked by the caller, so events of one job never race here.
    trial = session.get(TrialRow, (job_id, event.trial))
    if trial is None:
        session.add(
            TrialRow(
                job_id=job_id,
                trial=event.trial,
                epoch=event.epoch,
                epochs=event.epochs,
                metrics=dict(event.metrics),
                updated_at=now,
            )
        )
    else:
        trial.epoch, trial.epochs = event.epoch, event.epochs
        trial.metrics = dict(event.metrics)
        trial.updated_at = now


def jobs_by_ids(session: Session, job_ids: Sequence[str]) -> list[Job]:
    """Jobs by id in any team (internal use), in the order given; unknown ids are skipped."""
    rows = {r.id: r for r in session.scalars(select(JobRow).where(JobRow.id.in_(job_ids)))}
    return [to_domain(rows[i]) for i in job_ids if i in rows]
