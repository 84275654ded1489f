"""Creating a job: the one path shared by ``POST /v1/jobs``, ``POST /v1/jobs/{id}/resume``
and the dispatcher's schedules.

It checks the team's access and limits, writes the spec to ``jobs/<id>/spec.json``, then
inserts the job under the team's submission lock with the active-job limit enforced, all in one
transaction that the caller can add its own rows to (an idempotency record, a schedule run).

:func:`create_job` is the synchronous form (schedules, SQLite, callers without an event loop);
:func:`create_job_async` is the API's: on PostgreSQL the lock, the job, its first event, the
idempotency record and the limit check are one statement on an async connection (one round
trip, no thread), on SQLite it runs :func:`create_job` in a thread. Both run the same checks in
the same order and the same server-side function (migration 0003) on PostgreSQL. A resumed
job (services/store/resumption.py) is created by :func:`create_job` only: its link to the job
it continues is written in the job's transaction, which one autocommit statement cannot hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from anyio import to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.store import jobs as repo
from services.store import metrics, resumption
from services.store.db import Database
from services.store.domain import Job, NewJob
from services.store.ids import new_job_id
from services.store.jobs import IdempotencyKeyTaken, IdempotencyRecord, NearLimit
from services.store.resumption import ResumeFrom
from services.store.settings import TeamLimits
from trainforge.access import REGISTRY_SCHEME, AccessRules
from trainforge.errors import LimitExceeded, QuotaExceeded, StorageError
from trainforge.layout import spec_key
from trainforge.preflight import LocalMachine
from trainforge.registry import ModelNotFound, resolve
from trainforge.spec import JobKind, JobSpec
from trainforge.storage import LocalStore, ObjectStore, join_key

__all__ = [
    "Idempotency",
    "IdempotencyKeyTaken",
    "check_job_access",
    "check_job_inputs",
    "check_job_limits",
    "check_model_ref",
    "create_job",
    "create_job_async",
    "gpus_requested",
    "reads_models_store",
]

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


def gpus_requested(spec: JobSpec) -> int:
    """GPUs the job may hold at once: ``workers × gpus_per_worker``, or for a sweep, concurrent
    trials × workers per trial × GPUs per trial worker (all trials when the spec sets no
    concurrency limit) if that is more."""
    gpus = spec.resources.total_gpus
    if spec.kind is JobKind.SWEEP and spec.sweep is not None:
        sweep = spec.sweep
        concurrent = sweep.max_concurrent_trials or sweep.trials
        gpus = max(gpus, math.ceil(sweep.gpus_per_trial * sweep.workers_per_trial * concurrent))
    return gpus


def check_job_limits(spec: JobSpec, team: str, limits: TeamLimits) -> None:
    """Refuse a spec that asks for more than the team may ever use.

    Raises:
        LimitExceeded: too many GPUs per job, or too many sweep trials.
    """
    gpus = gpus_requested(spec)
    if gpus > limits.max_gpus_per_job:
        raise LimitExceeded(
            f"the job asks for {gpus} GPUs (resources.workers × gpus_per_worker, or for sweeps "
            "concurrent trials × sweep.workers_per_trial × gpus_per_trial); team "
            f"{team!r} may use at most "
            f"{limits.max_gpus_per_job} per job"
        )
    if spec.sweep is not None and spec.sweep.trials > limits.max_sweep_trials:
        raise LimitExceeded(
            f"sweep.trials is {spec.sweep.trials}; team {team!r} may run at most "
            f"{limits.max_sweep_trials} trials per sweep"
        )


def check_job_access(spec: JobSpec, access: AccessRules) -> None:
    """Refuse a spec that names a dataset or weights its team may not read.

    Raises:
        LocationInvalid: an ambiguous location.
        AccessDenied: a location outside the team's storage access policy, or one of
            trainforge's own stores (trainforge/access.py).
    """
    access.check_spec(spec.dataset.uri, spec.model.base)


def check_job_inputs(spec: JobSpec, machine: LocalMachine | None) -> None:
    """Refuse a spec whose job would fail at once on the files this server can see: a local
    dataset path that is missing or names data.yaml instead of its folder, a local base that
    is not a file, a stock base an offline server cannot fetch (trainforge/preflight.py).

    Only where jobs run on this machine (``machine``: the embedded server); in production
    (None) the job itself reports what it finds. Call it after :func:`check_job_access`, so a
    team learns nothing about locations it may not read.

    Raises:
        DatasetNotFound, DatasetError: the dataset folder cannot be opened.
        WeightsError: the base weights cannot be fetched.
    """
    if machine is not None:
        machine.check(spec.dataset.uri, spec.model.base)


def check_model_ref(spec: JobSpec, team_models_uri: str) -> None:
    """Refuse a ``registry://`` base that is not published in the team's own registry.

    Another team's model is refused exactly like a missing one: a team's registry root
    (``<models>/<team>``) is the only place this looks.

    Raises:
        ModelNotFound: no such model or version for this team.
    """
    if not reads_models_store(spec):
        return
    base = spec.model.base
    try:
        resolve(base, team_models_uri, "best.pt")
    except ModelNotFound:
        raise ModelNotFound(f"model.base: {base} is not published in your team's registry; "
                            "`trainforge models list NAME` shows its versions") from None


def reads_models_store(spec: JobSpec) -> bool:
    """Whether :func:`check_model_ref` reads the models store for ``spec`` (I/O that an event
    loop should run in a thread); otherwise it returns at once."""
    return spec.model.base.startswith(REGISTRY_SCHEME)


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


def create_job(
    db: Database,
    artifacts: ObjectStore,
    artifacts_prefix: str,
    team: str,
    spec: JobSpec,
    limits: TeamLimits,
    *,
    access: AccessRules,
    machine: LocalMachine | None = None,
    schedule_id: str | None = None,
    idempotency: Idempotency | None = None,
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
        team: the owner.
        spec: the validated job spec.
        limits: the team's limits.
        access: what the team may read (checked before anything is written).
        machine: the machine jobs run on, when the server sees it (embedded mode): the
            spec's local inputs are checked against it (:func:`check_job_inputs`).
        schedule_id: the schedule that submits the job, if any.
        idempotency: an Idempotency-Key to record with the job (before the limit check, so a
            retry is replayed even when the team is at its limit).
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
        IdempotencyKeyTaken: ``idempotency.key`` was used before by this team (nothing is
            created; the caller replays the stored response).
        AlreadyResumed: another job resumed ``resume.job_id`` first (nothing is created).
        JobNotResumable: the stopped job's checkpoint vanished before it was copied.
        StorageError: the spec (or a checkpoint) could not be written.
        Whatever ``within`` raises (the transaction is rolled back and the spec deleted).
    """
    check_job_access(spec, access)
    check_job_limits(spec, team, limits)
    check_job_inputs(spec, machine)
    new, key = _prepare(artifacts, artifacts_prefix, team, spec, schedule_id)
    written = [key]
    try:
        if resume is not None:
            new = dataclasses.replace(new, resumed_from=resume.job_id, progress=resume.progress)
            written += [dest for _, dest in resumption.checkpoint_keys(
                artifacts_prefix, resume.job_id, new.id)]
            resumption.copy_checkpoints(artifacts, artifacts_prefix, resume.job_id, new.id)
        job = (_insert_postgres(db, new, limits, idempotency, within) if db.is_postgres
               else _insert_sqlite(db, new, limits, idempotency, within))
    except BaseException:
        for written_key in written:
            _discard(artifacts, written_key)
        raise
    _log_submitted(job)
    return job


def _insert_postgres(
    db: Database,
    new: NewJob,
    limits: TeamLimits,
    idempotency: Idempotency | None,
    within: Callable[[Session, Job], None] | None,
) -> Job:
    now = repo.utcnow()
    record = idempotency.record(repo.new_job(new, now)) if idempotency else None
    for exclusive in (False, True):
        try:
            with db.transaction() as session:
                job = repo.insert_job_within_limit(
                    session, new, max_active=limits.max_active_jobs, exclusive=exclusive,
                    idempotency=record, now=now,
                )
                if within is not None:
                    within(session, job)
            return job
        except NearLimit:
            continue
    raise AssertionError("the exclusive lock never answers NearLimit")


def _insert_sqlite(
    db: Database,
    new: NewJob,
    limits: TeamLimits,
    idempotency: Idempotency | None,
    within: Callable[[Session, Job], None] | None,
) -> Job:
    # Every SQLite transaction is a serialised writer (BEGIN IMMEDIATE, services/store/db.py):
    # the count below is exact, no lock to take.
    with db.transaction() as session:
        job = repo.insert_job(session, new)
        if idempotency is not None:
            record = idempotency.record(job)
            try:
                repo.remember_idempotent(
                    session, new.team, record.key, request_sha256=record.request_sha256,
                    job_id=job.id, status_code=record.status_code, response=record.response,
                )
            except IntegrityError:
                # The (team, key) primary key: the job row exists (it was just inserted), so
                # nothing else in this statement can fail.
                raise IdempotencyKeyTaken() from None
        if within is not None:
            within(session, job)
        active = repo.count_unfinished(session, new.team)  # includes this job
        if active > limits.max_active_jobs:
            raise QuotaExceeded(
                f"team {new.team!r} has {active - 1} unfinished jobs, its limit is "
                f"{limits.max_active_jobs}; retry when some finish or cancel one"
            )
    return job


async def create_job_async(
    db: Database,
    artifacts: ObjectStore,
    artifacts_prefix: str,
    team: str,
    spec: JobSpec,
    limits: TeamLimits,
    *,
    access: AccessRules,
    machine: LocalMachine | None = None,
    idempotency: Idempotency | None = None,
) -> Job:
    """:func:`create_job` for an event loop (the API), with the same guarantees.

    PostgreSQL: the checks (on the embedded server a few stat() calls of local paths, inline),
    then the spec (written inline to a local directory, which costs less than a thread hop; in
    a thread for a network store), then one autocommit statement on the loop's async
    connection pool. SQLite: :func:`create_job` in a thread.

    Args:
        db, artifacts, artifacts_prefix, team, spec, limits, access, machine, idempotency:
            see :func:`create_job`.

    Returns:
        The job (committed).

    Raises:
        AccessDenied, LocationInvalid, LimitExceeded, DatasetError, WeightsError,
        QuotaExceeded, IdempotencyKeyTaken, StorageError: see :func:`create_job`.
    """
    if not db.is_postgres:
        return await to_thread.run_sync(functools.partial(
            create_job, db, artifacts, artifacts_prefix, team, spec, limits, access=access,
            machine=machine, idempotency=idempotency,
        ))
    check_job_access(spec, access)
    check_job_limits(spec, team, limits)
    # A few stat() calls on local paths at most (embedded mode): less than a thread hop.
    check_job_inputs(spec, machine)
    inline = isinstance(artifacts, LocalStore)
    if inline:
        new, key = _prepare(artifacts, artifacts_prefix, team, spec, None)
    else:
        new, key = await to_thread.run_sync(_prepare, artifacts, artifacts_prefix, team, spec,
                                            None)
    now = repo.utcnow()
    record = idempotency.record(repo.new_job(new, now)) if idempotency else None
    sent = False
    try:
        async with db.async_pool().connection() as conn:
            sent = True
            try:
                job = await repo.insert_job_within_limit_async(
                    conn, new, max_active=limits.max_active_jobs, exclusive=False,
                    idempotency=record, now=now,
                )
            except NearLimit:
                job = await repo.insert_job_within_limit_async(
                    conn, new, max_active=limits.max_active_jobs, exclusive=True,
                    idempotency=record, now=now,
                )
    except BaseException as exc:
        if sent and _outcome_unknown(exc):
            # The statement may have committed without our hearing of it, and a job must
            # never lose its spec; an orphan spec is invisible.
            log.warning("job %s: outcome of its creation unknown (%r); spec kept", new.id, exc)
            raise
        if inline:
            _discard(artifacts, key)
        else:
            await to_thread.run_sync(_discard, artifacts, key)
        raise
    metrics.JOBS_SUBMITTED.labels(kind=job.kind.value).inc()  # committed: count it
    _log_submitted(job)
    return job


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


def _discard(artifacts: ObjectStore, key: str) -> None:
    try:
        artifacts.delete(key)
    except StorageError as exc:  # an orphan object is invisible; keep the original error
        log.warning("could not delete orphan %s: %s", key, exc)
