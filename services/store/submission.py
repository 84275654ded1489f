"""Creating a job: the one path shared by ``POST /v1/jobs``, ``POST /v1/jobs/{id}/resume``
and the dispatcher's schedules.

It checks the spec (services/store/admission.py), writes it to ``jobs/<id>/spec.json``, then
inserts the job under the team's submission lock with the active-job limit enforced
(services/store/creation.py), all in one transaction that the caller can add its own rows to
(an idempotency record, a schedule run).

Both forms share the same checks, in the same order, and the same plan (:func:`_plan`: the spec
written, a resumed job's checkpoints copied, the idempotency record built); they differ only in
the transaction. :func:`create_job` runs it in a session of its own (schedules, resumptions,
SQLite); :func:`create_job_async`, the API's, on PostgreSQL sends the lock, the job, its first
event, the idempotency record and the limit check as one autocommit statement on an async
connection (one round trip, no thread), and on SQLite runs :func:`create_job` in a thread. A
resumed job is created by :func:`create_job` only: its link to the job it continues is written
in the job's transaction, which one autocommit statement cannot hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from anyio import to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.store import creation, metrics, resumption
from services.store.admission import (
    check_job_access,
    check_job_inputs,
    check_job_limits,
    gpus_requested,
)
from services.store.clock import utcnow
from services.store.db import Database
from services.store.domain import Job, NewJob
from services.store.idempotency import (
    IdempotencyKeyTaken,
    IdempotencyRecord,
    remember_idempotent,
)
from services.store.ids import new_job_id
from services.store.jobs import count_unfinished
from services.store.resumption import ResumeFrom
from services.store.settings import TeamLimits
from trainforge.access import AccessRules
from trainforge.errors import QuotaExceeded, StorageError
from trainforge.layout import spec_key
from trainforge.preflight import LocalMachine
from trainforge.spec import JobSpec
from trainforge.storage import LocalStore, ObjectStore, join_key

__all__ = ["Idempotency", "IdempotencyKeyTaken", "JobRequest", "create_job", "create_job_async"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Idempotency:
    """An Idempotency-Key to remember with the job, in the job's transaction.

    Attributes:
        key: the client's key (unique per team: a second use raises
            :class:`IdempotencyKeyTaken` and creates nothing).
        request_sha256: the fingerprint of the request, to tell a retry from a reuse.
        response: the response body to store for the new job (replayed to retries).
        status_code: the status stored with it.
    """

    key: str
    request_sha256: str
    response: Callable[[Job], dict[str, Any]]
    status_code: int = 201

    def record(self, job: Job) -> IdempotencyRecord:
        return IdempotencyRecord(self.key, self.request_sha256, self.status_code,
                                 self.response(job))


@dataclass(frozen=True)
class JobRequest:
    """A job to create: whose, which spec, under which limits and storage rules.

    Attributes:
        team: the owner.
        spec: the validated job spec.
        limits: the team's limits.
        access: what the team may read (checked before anything is written).
        machine: the machine jobs run on, when the server sees it (embedded mode): the
            spec's local inputs are checked against it (:func:`check_job_inputs`).
        idempotency: an Idempotency-Key to record with the job (before the limit check, so a
            retry is replayed even when the team is at its limit).
    """

    team: str
    spec: JobSpec
    limits: TeamLimits
    access: AccessRules
    machine: LocalMachine | None = None
    idempotency: Idempotency | None = None


def _check(request: JobRequest) -> None:
    """Every check a new job passes before anything is written, in this order (the inputs
    last, so a team learns nothing about locations it may not read)."""
    check_job_access(request.spec, request.access)
    check_job_limits(request.spec, request.team, request.limits)
    check_job_inputs(request.spec, request.machine)


def _prepare(
    artifacts: ObjectStore,
    artifacts_prefix: str,
    team: str,
    spec: JobSpec,
    schedule_id: str | None,
) -> tuple[NewJob, str]:
    """Write the spec; returns the job to insert and the spec's key."""
    job_id = new_job_id()
    key = join_key(artifacts_prefix, spec_key(job_id))
    info = artifacts.put(key, spec.to_json().encode(), content_type="application/json")
    new = NewJob(
        id=job_id,
        team=team,
        kind=spec.kind,
        name=spec.name,
        # root_uri + key is what uri(key) returns, without resolving the path a second time.
        spec_uri=f"{artifacts.root_uri}/{key}",
        spec_sha256=info.sha256 or "",
        gpus=gpus_requested(spec),
        max_attempts=spec.retries + 1,
        schedule_id=schedule_id,
    )
    return new, key


@dataclass(frozen=True)
class _Plan:
    """A job ready to insert, and the objects written for it."""

    insertion: creation.Insertion
    #: The keys written for it, deleted again if the job is not created.
    written: list[str]


def _plan(artifacts: ObjectStore, artifacts_prefix: str, request: JobRequest,
          schedule_id: str | None, resume: ResumeFrom | None) -> _Plan:
    """Write the spec (and, for a resumed job, copy the stopped job's checkpoints into the new
    job's, services/store/resumption.py); on failure nothing written is left behind."""
    new, key = _prepare(artifacts, artifacts_prefix, request.team, request.spec, schedule_id)
    written = [key]
    try:
        if resume is not None:
            new = dataclasses.replace(new, resumed_from=resume.job_id, progress=resume.progress)
            written += [dest for _, dest in resumption.checkpoint_keys(
                artifacts_prefix, resume.job_id, new.id)]
            resumption.copy_checkpoints(artifacts, artifacts_prefix, resume.job_id, new.id)
    except BaseException:
        _discard(artifacts, written)
        raise
    now = utcnow()
    idempotency = request.idempotency
    record = idempotency.record(creation.new_job(new, now)) if idempotency else None
    return _Plan(creation.Insertion(new, request.limits.max_active_jobs, now, record), written)


def create_job(
    db: Database,
    artifacts: ObjectStore,
    artifacts_prefix: str,
    request: JobRequest,
    *,
    schedule_id: str | None = None,
    within: Callable[[Session, Job], None] | None = None,
    resume: ResumeFrom | None = None,
) -> Job:
    """Create a QUEUED job exactly once.

    The spec is written to ``jobs/<id>/spec.json`` first (for a resumed job, then the stopped
    job's checkpoints are copied into the new job's, services/store/resumption.py); the job
    row is committed after, so a job never exists without its spec and checkpoints, and a
    creation that fails half-way leaves at most orphan objects nobody can see (they are
    deleted).

    The active-job limit is exact without serialising a team's submissions: on PostgreSQL a
    transaction normally takes the team's advisory lock *shared* and commits if, counting its
    own job, ``count + (transactions that can be in flight at once) - 1 <= limit``: even if
    every other possible transaction added a job, the limit holds. Nearer the limit (and
    whenever the limit is below ``max_connections``) it takes the lock *exclusive*, which waits
    for the shared holders to commit and counts exactly. The count is taken after the lock is
    granted, in a fresh snapshot (``trainforge_create_job``, migration 0003, does the lock, the
    inserts and the count in one statement). SQLite serialises every transaction, so there the
    count is exact at once.

    Args:
        db: the job store.
        artifacts: the artifacts store, and ``artifacts_prefix`` the key prefix inside it.
        request: the job asked for (:class:`JobRequest`).
        schedule_id: the schedule that submits the job, if any.
        within: called once with the session and the new job inside the job's transaction,
            to write rows that must commit with the job or not at all (after the limit check
            on PostgreSQL, where the job's statement does it; before it on SQLite).
        resume: the stopped job the new one continues (``resumed_from``), from a
            :func:`services.store.resumption.plan`.

    Returns:
        The job.

    Raises:
        AccessDenied, LocationInvalid: see :func:`check_job_access`.
        LimitExceeded: the job asks for more GPUs or trials than the team may use.
        DatasetError, WeightsError: see :func:`check_job_inputs`.
        QuotaExceeded: the team is at its active-job limit.
        IdempotencyKeyTaken: ``request.idempotency.key`` was used before by this team (nothing is
            created; the caller replays the stored response).
        AlreadyResumed: another job resumed ``resume.job_id`` first (nothing is created).
        JobNotResumable: the stopped job's checkpoint vanished before it was copied.
        StorageError: the spec (or a checkpoint) could not be written.
        Whatever ``within`` raises (the transaction is rolled back and the spec deleted).
    """
    _check(request)
    plan = _plan(artifacts, artifacts_prefix, request, schedule_id, resume)
    try:
        job = (_insert_postgres(db, plan.insertion, within) if db.is_postgres
               else _insert_sqlite(db, plan.insertion, within))
    except BaseException:
        _discard(artifacts, plan.written)
        raise
    _log_submitted(job)
    return job


def _insert_postgres(db: Database, insertion: creation.Insertion,
                     within: Callable[[Session, Job], None] | None) -> Job:
    for exclusive in (False, True):
        try:
            with db.transaction() as session:
                job = creation.insert_job_within_limit(session, insertion, exclusive=exclusive)
                if within is not None:
                    within(session, job)
            return job
        except creation.NearLimit:
            continue
    raise AssertionError("the exclusive lock never answers NearLimit")


def _insert_sqlite(db: Database, insertion: creation.Insertion,
                   within: Callable[[Session, Job], None] | None) -> Job:
    # Every SQLite transaction is a serialised writer (BEGIN IMMEDIATE, services/store/db.py):
    # the count below is exact, no lock to take.
    new = insertion.new
    with db.transaction() as session:
        job = creation.insert_job(session, new, now=insertion.now)
        if insertion.idempotency is not None:
            try:
                remember_idempotent(session, new.team, insertion.idempotency, job.id)
            except IntegrityError:
                # The (team, key) primary key: the job row exists (it was just inserted), so
                # nothing else in this statement can fail.
                raise IdempotencyKeyTaken() from None
        if within is not None:
            within(session, job)
        active = count_unfinished(session, new.team)  # includes this job
        if active > insertion.max_active:
            raise QuotaExceeded(
                f"team {new.team!r} has {active - 1} unfinished jobs, its limit is "
                f"{insertion.max_active}; retry when some finish or cancel one"
            )
    return job


async def create_job_async(
    db: Database, artifacts: ObjectStore, artifacts_prefix: str, request: JobRequest
) -> Job:
    """:func:`create_job` for an event loop (the API), with the same guarantees.

    PostgreSQL: the checks (on the embedded server a few stat() calls of local paths, inline),
    then the plan (the spec written inline to a local directory, which costs less than a thread
    hop; in a thread for a network store), then one autocommit statement on the loop's async
    connection pool. SQLite: :func:`create_job` in a thread.

    Args:
        db, artifacts, artifacts_prefix, request: see :func:`create_job`.

    Returns:
        The job (committed).

    Raises:
        AccessDenied, LocationInvalid, LimitExceeded, DatasetError, WeightsError,
        QuotaExceeded, IdempotencyKeyTaken, StorageError: see :func:`create_job`.
    """
    if not db.is_postgres:
        return await to_thread.run_sync(create_job, db, artifacts, artifacts_prefix, request)
    _check(request)
    inline = isinstance(artifacts, LocalStore)
    plan_args = (artifacts, artifacts_prefix, request, None, None)
    plan = _plan(*plan_args) if inline else await to_thread.run_sync(_plan, *plan_args)
    sent = False
    try:
        async with db.async_pool().connection() as conn:
            sent = True
            job = await _insert_autocommit(conn, plan.insertion)
    except BaseException as exc:
        if sent and _outcome_unknown(exc):
            # The statement may have committed without our hearing of it, and a job must
            # never lose its spec; an orphan spec is invisible.
            log.warning("job %s: outcome of its creation unknown (%r); spec kept",
                        plan.insertion.new.id, exc)
            raise
        if inline:
            _discard(artifacts, plan.written)
        else:
            await to_thread.run_sync(_discard, artifacts, plan.written)
        raise
    metrics.JOBS_SUBMITTED.labels(kind=job.kind.value).inc()  # committed: count it
    _log_submitted(job)
    return job


async def _insert_autocommit(conn: psycopg.AsyncConnection[Any],
                             insertion: creation.Insertion) -> Job:
    for exclusive in (False, True):
        try:
            return await creation.insert_job_within_limit_async(conn, insertion,
                                                                exclusive=exclusive)
        except creation.NearLimit:
            continue
    raise AssertionError("the exclusive lock never answers NearLimit")


def _outcome_unknown(exc: BaseException) -> bool:
    """Whether a creation statement that raised ``exc`` may have committed all the same:
    cancelled while it ran, or the connection was lost before the answer came back.

    Any other error means it did not: an error with a SQLSTATE is the server's answer (the
    statement's transaction is rolled back), and Python errors happen before it is sent.
    """
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, psycopg.OperationalError) and (
        exc.sqlstate is None or exc.sqlstate.startswith("08")  # class 08: connection exception
    )


def _log_submitted(job: Job) -> None:
    log.info("job %s submitted by team %s (%s %s)%s", job.id, job.team, job.kind, job.name,
             f" from schedule {job.schedule_id}" if job.schedule_id else
             f" resuming job {job.resumed_from}" if job.resumed_from else "")


def _discard(artifacts: ObjectStore, keys: list[str]) -> None:
    for key in keys:
        try:
            artifacts.delete(key)
        except StorageError as exc:  # an orphan object is invisible; keep the original error
            log.warning("could not delete orphan %s: %s", key, exc)
