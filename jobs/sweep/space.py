"""The spec's ``sweep`` section in Ray Tune's terms: search space, searcher, scheduler, sizing.

Also the way back: :func:`trial_params` turns one sampled config into the TrainParams the
trial trains with, refusing any value that would not reach Ultralytics unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from trainforge.errors import HyperparameterMismatch
from trainforge.spec import Augment, Domain, JobSpec, SweepParams, TrainParams

#: Ray Tune's direction for every metric the spec allows (all are "higher is better").
MODE = "max"
#: The per-epoch counter ASHA measures a trial's progress in (reported with every result).
TIME_ATTR = "epoch"


def param_space(sweep: SweepParams) -> dict[str, Any]:
    """Ray Tune's ``param_space`` for the spec's search space (randint's upper end excluded).

    Returns:
        ``{hyperparameter: tune domain}`` with Ultralytics' argument names as keys.
    """
    return {name: _domain(domain) for name, domain in sorted(sweep.space.items())}


def _domain(domain: Domain) -> Any:
    from ray import tune

    if domain.uniform is not None:
        return tune.uniform(*domain.uniform)
    if domain.loguniform is not None:
        return tune.loguniform(*domain.loguniform)
    if domain.randint is not None:
        return tune.randint(*domain.randint)
    return tune.choice(list(domain.choice or []))


def searcher(sweep: SweepParams, *, seed: int, concurrency: int) -> Any:
    """The search algorithm: seeded random sampling, or Optuna's TPE.

    Args:
        sweep: the spec's sweep section.
        seed: makes the sampled configs reproducible (the spec's ``train.seed``).
        concurrency: trials at once. Tune applies TuneConfig's limit to Optuna itself but
            ignores it for random sampling, which takes its own.
    """
    if sweep.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=sweep.metric, mode=MODE, seed=seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency)


def scheduler(sweep: SweepParams, *, max_epochs: int) -> Any:
    """ASHA (stops trials that trail their rung early) or FIFO (every trial runs to the end).

    Metric and mode come from the TuneConfig.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if sweep.scheduler == "asha":
        return ASHAScheduler(time_attr=TIME_ATTR, max_t=max_epochs,
                             grace_period=sweep.grace_period,
                             reduction_factor=sweep.reduction_factor)
    return FIFOScheduler()  # type: ignore[no-untyped-call]


def trial_resources(sweep: SweepParams) -> Any:
    """What one trial reserves on the cluster, in ``tune.with_resources`` terms: one bundle
    per worker of a data-parallel trial (the trial's own process takes the first)."""
    if sweep.workers_per_trial > 1:
        from ray import tune

        bundle = {"CPU": sweep.cpus_per_trial}
        if sweep.gpus_per_trial > 0:
            bundle["GPU"] = sweep.gpus_per_trial
        return tune.PlacementGroupFactory([bundle] * sweep.workers_per_trial)
    resources = {"cpu": sweep.cpus_per_trial}
    if sweep.gpus_per_trial > 0:
        resources["gpu"] = sweep.gpus_per_trial
    return resources


def default_concurrency(sweep: SweepParams, cluster: Mapping[str, float]) -> int:
    """Trials run at once when the spec does not say: as many as the cluster fits.

    GPU trials are bounded by GPUs ÷ gpus_per_trial (and by CPUs ÷ cpus_per_trial, since a
    trial needs both); on a CPU-only sweep by CPUs ÷ cpus_per_trial; a data-parallel trial
    counts ``workers_per_trial`` times. Never more than the number of trials, never less
    than one.

    Args:
        sweep: the spec's sweep section.
        cluster: ``ray.cluster_resources()``.
    """
    workers = sweep.workers_per_trial
    fits = math.floor(cluster.get("CPU", 0) / (sweep.cpus_per_trial * workers) + 1e-9)
    if sweep.gpus_per_trial > 0:
        fits = min(fits, math.floor(
            cluster.get("GPU", 0) / (sweep.gpus_per_trial * workers) + 1e-9))
    return max(1, min(fits, sweep.trials))


@dataclass(frozen=True)
class SweepPlan:
    """Everything Tune is configured with, resolved once by the entrypoint."""

    sweep: SweepParams
    max_epochs: int
    concurrency: int
    seed: int

    @classmethod
    def of(cls, spec: JobSpec, cluster: Mapping[str, float]) -> SweepPlan:
        sweep = _sweep_of(spec)
        concurrency = sweep.max_concurrent_trials or default_concurrency(sweep, cluster)
        return cls(sweep, spec.train.epochs, min(concurrency, sweep.trials), spec.train.seed)

    def describe(self) -> str:
        s = self.sweep
        if s.scheduler == "asha":
            sched = (f"ASHA (grace {s.grace_period}, reduction {s.reduction_factor:g}, "
                     f"max_t {self.max_epochs} epochs)")
        else:
            sched = f"FIFO ({self.max_epochs} epochs each)"
        per_trial = f"{s.cpus_per_trial:g} CPU" + (f" + {s.gpus_per_trial:g} GPU"
                                                    if s.gpus_per_trial else "")
        if s.workers_per_trial > 1:
            per_trial = f"{s.workers_per_trial} data-parallel workers of {per_trial}"
        return (f"{s.trials} trials over {', '.join(sorted(s.space))}; {s.searcher} search, "
                f"{sched}, {self.concurrency} at once, {per_trial} each; "
                f"best by {s.metric} ({MODE})")


def _sweep_of(spec: JobSpec) -> SweepParams:
    if spec.sweep is None:  # JobSpec refuses kind sweep without the section; kept for mypy
        raise ValueError("a sweep job's spec has no sweep section")
    return spec.sweep


def trial_params(train: TrainParams, config: Mapping[str, Any]) -> TrainParams:
    """The spec's train section with one trial's sampled values in place.

    Args:
        train: the spec's ``train`` section (everything not searched over).
        config: the trial's sampled ``{hyperparameter: value}``.

    Returns:
        The trial's TrainParams, validated like a train spec.

    Raises:
        HyperparameterMismatch: a sampled value is not a hyperparameter, does not validate, or
            would be changed on its way to Ultralytics (rounded, coerced to another type).
    """
    sampled = {name: _plain(value) for name, value in config.items()}
    top = {k: v for k, v in sampled.items() if k in TrainParams.model_fields}
    augment = {k: v for k, v in sampled.items() if k in Augment.model_fields}
    unknown = sorted(set(sampled) - set(top) - set(augment) - {"augment"})
    if unknown:
        raise HyperparameterMismatch(f"the trial config has keys that are not hyperparameters: "
                                     f"{', '.join(unknown)}")
    data = train.model_dump()
    data.update(top)
    data["augment"] = {**data["augment"], **augment}
    try:
        params = TrainParams.model_validate(data)
    except ValidationError as exc:
        raise HyperparameterMismatch(f"sampled config {sampled} does not validate: "
                                     f"{exc.errors()[0]['msg']}") from None
    changed = {k: (v, _value(params, k)) for k, v in sampled.items()
               if not _same(v, _value(params, k))}
    if changed:
        raise HyperparameterMismatch(
            "sampled values would reach Ultralytics changed: " + "; ".join(
                f"{k}: sampled {a!r}, would train with {b!r}" for k, (a, b) in changed.items()))
    return params


def _value(params: TrainParams, name: str) -> Any:
    return getattr(params, name) if name in TrainParams.model_fields else getattr(
        params.augment, name)


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python, but a flag and a number are different hyperparameters.
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def _plain(value: Any) -> Any:
    """numpy scalars (what Tune's samplers return) as the Python values they hold."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, str | bytes) else value
