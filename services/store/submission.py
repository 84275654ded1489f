"""Creating a job: the one path shared by ``POST /v1/jobs`` and the dispatcher's schedules.

It checks the team's limits, writes the spec to ``jobs/<id>/spec.json``, then inserts the job
under the team's submission lock with the active-job limit enforced, all in one transaction
that the caller can add its own rows to (an idempotency record, a schedule run).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from sqlalchemy.orm import Session

from services.store import jobs as repo
from services.store.db import Database
from services.store.domain import Job, NewJob
from services.store.ids import new_job_id
from services.store.settings import TeamLimits
from trainforge.access import REGISTRY_SCHEME, AccessRules
from trainforge.errors import LimitExceeded, QuotaExceeded, StorageError
from trainforge.layout import spec_key
from trainforge.registry import ModelNotFound, resolve
from trainforge.spec import JobKind, JobSpec
from trainforge.storage import ObjectStore, join_key

log = logging.getLogger(__name__)


def gpus_requested(spec: JobSpec) -> int:
    """GPUs the job may hold at once: ``resources.gpus``, or for a sweep, concurrent trials ×
    GPUs per trial (all trials when the spec sets no concurrency limit) if that is more."""
    gpus = spec.resources.gpus
    if spec.kind is JobKind.SWEEP and spec.sweep is not None:
        concurrent = spec.sweep.max_concurrent_trials or spec.sweep.trials
        gpus = max(gpus, math.ceil(spec.sweep.gpus_per_trial * concurrent))
    return gpus


def check_job_limits(spec: JobSpec, team: str, limits: TeamLimits) -> None:
    """Refuse a spec that asks for more than the team may ever use.

    Raises:
        LimitExceeded: too many GPUs per job, or too many sweep trials.
    """
    gpus = gpus_requested(spec)
    if gpus > limits.max_gpus_per_job:
        raise LimitExceeded(
            f"the job asks for {gpus} GPUs (resources.gpus, or for sweeps concurrent trials × "
            f"sweep.gpus_per_trial); team {team!r} may use at most "
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


def check_model_ref(spec: JobSpec, team_models_uri: str) -> None:
    """Refuse a ``registry://`` base that is not published in the team's own registry.

    Another team's model is refused exactly like a missing one: a team's registry root
    (``<models>/<team>``) is the only place this looks.

    Raises:
        ModelNotFound: no such model or version for this team.
    """
    base = spec.model.base
    if not base.startswith(REGISTRY_SCHEME):
        return
    try:
        resolve(base, team_models_uri, "best.pt")
    except ModelNotFound:
        raise ModelNotFound(f"model.base: {base} is not published in your team's registry; "
                            "`trainforge models list NAME` shows its versions") from None


class _NearLimit(Exception):
    """The shared-lock fast path cannot prove the limit holds: redo with the exclusive lock."""


def create_job(
    db: Database,
    artifacts: ObjectStore,
    artifacts_prefix: str,
    team: str,
    spec: JobSpec,
    limits: TeamLimits,
    *,
    access: AccessRules,
    schedule_id: str | None = None,
    within: Callable[[Session, Job], None] | None = None,
) -> Job:
    """Create a QUEUED job exactly once.

    The spec is written to ``jobs/<id>/spec.json`` first; the job row is committed after, so a
    job never exists without its spec, and a creation that fails half-way leaves at most an
    orphan spec nobody can see (it is deleted).

    The active-job limit is exact without serialising a team's submissions: a transaction
    normally takes the team's advisory lock *shared* and commits if, counting its own job,
    ``count + (transactions that can be in flight at once) - 1 <= limit``: even if every other
    possible transaction added a job, the limit holds. Nearer the limit it takes the lock
    *exclusive*, which waits for the shared holders to commit and counts exactly.

    Args:
        db: the job store.
        artifacts: the artifacts store, and ``artifacts_prefix`` the key prefix inside it.
        team: the owner.
        spec: the validated job spec.
        limits: the team's limits.
        access: what the team may read (checked before anything is written).
        schedule_id: the schedule that submits the job, if any.
        within: called with the session and the new job inside the job's transaction (before
            the limit check), to write rows that must commit with the job or not at all. It may
            run twice: once per lock mode.

    Returns:
        The job.

    Raises:
        AccessDenied, LocationInvalid: see :func:`check_job_access`.
        LimitExceeded: the job asks for more GPUs or trials than the team may use.
        QuotaExceeded: the team is at its active-job limit.
        StorageError: the spec could not be written.
        Whatever ``within`` raises (the transaction is rolled back and the spec deleted).
    """
    check_job_access(spec, access)
    check_job_limits(spec, team, limits)
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
    try:
        for exclusive in (False, True):
            try:
                with db.transaction() as session:
                    repo.lock_team(session, team, exclusive=exclusive)
                    job = repo.insert_job(session, new)
                    if within is not None:
                        within(session, job)
                    active = repo.count_unfinished(session, team)  # includes this job
                    if not exclusive and active - 1 + repo.concurrent_transactions_bound(
                        session
                    ) > limits.max_active_jobs:
                        raise _NearLimit
                    if active > limits.max_active_jobs:
                        raise QuotaExceeded(
                            f"team {team!r} has {active - 1} unfinished jobs, its limit is "
                            f"{limits.max_active_jobs}; retry when some finish or cancel one"
                        )
                break
            except _NearLimit:
                continue
    except BaseException:
        _discard_spec(artifacts, key)
        raise
    log.info("job %s submitted by team %s (%s %s)%s", job_id, team, spec.kind, spec.name,
             f" from schedule {schedule_id}" if schedule_id else "")
    return job


def _discard_spec(artifacts: ObjectStore, key: str) -> None:
    try:
        artifacts.delete(key)
    except StorageError as exc:  # an orphan spec is invisible; keep the original error
        log.warning("could not delete orphan spec %s: %s", key, exc)
