"""What a job spec must pass before a job exists: the team's limits and storage access, the
inputs the server can see, a ``registry://`` base in the team's own registry.

Every way a job is created runs these (services/store/submission.py), and a schedule runs them
when it is created or changed (services/api/schedules.py), so that its runs are not refused
later for what could be said at once.
"""

from __future__ import annotations

import math

from services.store.settings import TeamLimits
from trainforge.access import REGISTRY_SCHEME, AccessRules
from trainforge.errors import LimitExceeded
from trainforge.preflight import LocalMachine
from trainforge.registry import ModelNotFound, resolve
from trainforge.spec import JobKind, JobSpec

__all__ = ["check_job_access", "check_job_inputs", "check_job_limits", "check_model_ref",
           "gpus_requested", "reads_models_store"]


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
