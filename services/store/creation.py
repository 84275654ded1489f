"""Inserting a job: the QUEUED row and its first event, under the team's active-job limit.

services/store/submission.py decides when (checks first, the spec written, then this in the
job's transaction). Two ways in, one per database:

- :func:`insert_job`: the row and the event as two INSERTs, no lock and no limit (SQLite, whose
  transactions are serialised, counts in the same transaction; tests use it directly);
- :func:`insert_job_within_limit` and its autocommit form :func:`insert_job_within_limit_async`:
  PostgreSQL's ``trainforge_create_job()`` (migration 0003) takes the team's advisory lock,
  counts, inserts the job, its event and the idempotency record in one statement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from sqlalchemy import Table, insert, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from services.store import metrics
from services.store.clock import utcnow
from services.store.domain import Job, NewJob
from services.store.idempotency import IdempotencyKeyTaken, IdempotencyRecord
from services.store.jobs import UNFINISHED_VALUES
from services.store.tables import EventRow, JobRow
from trainforge.errors import QuotaExceeded
from trainforge.states import JobState

_JOBS = cast(Table, JobRow.__table__)
# Built once: building them per call (coercions, cache keys) costs more CPU than the round trip.
_INSERT_JOB = insert(_JOBS)
_INSERT_EVENT = insert(cast(Table, EventRow.__table__))

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
class Insertion:
    """A job to create under its team's active-job limit, and what is stored with it."""

    new: NewJob
    #: The team's limit of unfinished jobs, this one included.
    max_active: int
    #: When it is created (its ``created_at`` and first event).
    now: datetime
    #: The Idempotency-Key record written in the same statement, if any.
    idempotency: IdempotencyRecord | None = None


class NearLimit(Exception):
    """The shared lock cannot prove the active-job limit holds: retry with the exclusive lock.

    Nothing was written (the statement failed, and with it its transaction's writes).
    """


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


def _create_params(job: Insertion, exclusive: bool) -> dict[str, Any]:
    new, record = job.new, job.idempotency
    return {
        "team": new.team,
        "exclusive": exclusive,
        "max_active": min(job.max_active, _INT_MAX),
        "unfinished": UNFINISHED_VALUES,
        "id": new.id,
        "kind": new.kind.value,
        "name": new.name,
        "spec_uri": new.spec_uri,
        "spec_sha256": new.spec_sha256,
        "gpus": new.gpus,
        "max_attempts": new.max_attempts,
        "now": job.now,
        "schedule_id": new.schedule_id,
        "reason": _submitted_reason(new),
        "key": record.key if record else None,
        "request_sha256": record.request_sha256 if record else None,
        "status_code": record.status_code if record else None,
        "response": json.dumps(record.response) if record else None,
    }


def _refused(exc: BaseException | None, job: Insertion) -> None:
    """Raise the domain error for a refusal the function (or the idempotency key) answered
    with; return for any other error (the caller re-raises it).

    Raises:
        NearLimit, QuotaExceeded, IdempotencyKeyTaken: see :func:`insert_job_within_limit`.
    """
    if not isinstance(exc, psycopg.Error):
        return
    if exc.sqlstate == _NEAR_LIMIT_STATE:
        raise NearLimit() from None
    if exc.sqlstate == _AT_LIMIT_STATE:
        raise QuotaExceeded(
            f"team {job.new.team!r} has {exc.diag.message_detail} unfinished jobs, its limit "
            f"is {job.max_active}; retry when some finish or cancel one"
        ) from None
    if (isinstance(exc, psycopg.errors.UniqueViolation)
            and exc.diag.constraint_name == _IDEMPOTENCY_PK):
        raise IdempotencyKeyTaken() from None


def insert_job_within_limit(session: Session, job: Insertion, *, exclusive: bool) -> Job:
    """PostgreSQL: create a QUEUED job, its first event and its idempotency record under the
    team's advisory lock, if the active-job limit allows it, in one statement of the caller's
    transaction (services/store/submission.py explains the lock modes).

    Raises:
        NearLimit: ``exclusive`` was false and the shared lock cannot prove the limit holds.
        QuotaExceeded: the team is at ``job.max_active`` unfinished jobs.
        IdempotencyKeyTaken: ``job.idempotency.key`` already has a record for the team.
        AlreadyResumed: ``job.new`` resumes a job that another job resumed first.
    """
    try:
        session.connection().exec_driver_sql(_CREATE_JOB, _create_params(job, exclusive))
    except DBAPIError as exc:
        _refused(exc.orig, job)
        raise
    if job.new.resumed_from is not None:
        _link_resumed(session, job.new)
    metrics.observe(session, metrics.Submitted(job.new.kind.value, job.new.team))
    return new_job(job.new, job.now)


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


async def insert_job_within_limit_async(conn: psycopg.AsyncConnection[Any], job: Insertion, *,
                                        exclusive: bool) -> Job:
    """:func:`insert_job_within_limit` as one autocommit statement on ``conn`` (committed when
    it returns: one round trip). The caller counts the submission in the metrics.

    Raises:
        NearLimit, QuotaExceeded, IdempotencyKeyTaken: as :func:`insert_job_within_limit`.
        ValueError: ``job.new`` is a resumed job (its link is written in the job's transaction,
            which one autocommit statement cannot hold: create it with submission.create_job).
    """
    if job.new.resumed_from is not None:
        raise ValueError("a resumed job is created by submission.create_job, not in autocommit")
    try:
        await conn.execute(_CREATE_JOB, _create_params(job, exclusive))
    except psycopg.Error as exc:
        _refused(exc, job)
        raise
    return new_job(job.new, job.now)
