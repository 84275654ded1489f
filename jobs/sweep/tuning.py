"""Ray Tune around the trials: a new experiment, or the job's interrupted one restored.

The experiment lives in the artifacts store under ``jobs/<id>/ray/sweep`` (the train job's
``storage_for``), so a new attempt of the job, on any node, finds it there: finished trials
are kept as they are, unfinished ones continue from their last checkpoint, errored ones are
resumed (a new attempt is a retry).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from jobs.core.ray_cluster import storage_for
from jobs.sweep.results import TrialRecord
from jobs.sweep.space import MODE, SweepPlan, param_space, scheduler, searcher, trial_resources
from jobs.sweep.trial import TrialContext, run_trial
from trainforge.constants import ENV_TUNE_SNAPSHOT_WARNING_S
from trainforge.errors import SweepFailed, TrainforgeError
from trainforge.reporting import JobReporter

log = logging.getLogger(__name__)

#: The experiment's directory name under ``jobs/<id>/ray/``.
EXPERIMENT = "sweep"


@dataclass(frozen=True)
class SweepOutcome:
    """What the sweep ran: every trial, and whether this run restored an earlier one."""

    records: list[TrialRecord]
    restored: bool
    grid: Any  # ray.tune.ResultGrid (checkpoints of the trials)


def run(plan: SweepPlan, ctx: TrialContext, artifacts_uri: str,
        reporter: JobReporter) -> SweepOutcome:
    """Run (or resume) the sweep until every trial finished, stopped or failed.

    Raises:
        SweepFailed: Tune itself failed (storage unreachable, experiment state unreadable).
    """
    # A trial checkpoint every epoch, one kept: Tune then saves the experiment state after
    # every checkpoint (what makes a restore lose nothing) and warns each time it happens.
    os.environ.setdefault(ENV_TUNE_SNAPSHOT_WARNING_S, "0")
    from ray import tune

    storage_path, filesystem = storage_for(artifacts_uri, ctx.job_id)
    path = f"{storage_path}/{EXPERIMENT}"
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    trial_resources(plan.sweep))
    restored = bool(tune.Tuner.can_restore(path, storage_filesystem=filesystem))
    if restored:
        reporter.message("resuming the sweep from its stored experiment state", path=path,
                         attempt=ctx.attempt)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True,
                                   resume_errored=True, storage_filesystem=filesystem)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(plan.sweep),
            tune_config=tune.TuneConfig(
                metric=plan.sweep.metric, mode=MODE, num_samples=plan.sweep.trials,
                search_alg=searcher(plan.sweep, seed=plan.seed, concurrency=plan.concurrency),
                scheduler=scheduler(plan.sweep, max_epochs=plan.max_epochs),
                max_concurrent_trials=None if plan.sweep.searcher == "random"
                else plan.concurrency,
                # A finished trial's process takes the next one (no new Python, torch and
                # Ultralytics imports); Tune starts a fresh one when the old trial's thread
                # does not end within seconds (a trial stopped mid-epoch). A data-parallel
                # trial's rank 0 needs a fresh process: Ultralytics reads its rank on import.
                reuse_actors=plan.sweep.workers_per_trial == 1,
            ),
            run_config=tune.RunConfig(
                name=EXPERIMENT, storage_path=storage_path, storage_filesystem=filesystem,
                failure_config=tune.FailureConfig(max_failures=ctx.spec.retries),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[TrialEvents(plan.max_epochs, plan.sweep.metric)],
                verbose=1,
            ),
        )
    try:
        grid: Any = tuner.fit()  # ResultGrid: iterable, though not typed as such
    except TrainforgeError:
        raise
    except Exception as exc:  # Tune's own failures (TuneError, storage errors…)
        raise SweepFailed(f"the Ray Tune experiment at {path} failed: {exc}") from None
    records = [_record(result) for result in grid]
    return SweepOutcome(records, restored, grid)


def _record(result: Any) -> TrialRecord:
    metrics = result.metrics or {}
    frame = result.metrics_dataframe
    rows: list[dict[str, Any]] = [] if frame is None else frame.to_dict("records")
    return TrialRecord(
        trial_id=str(metrics.get("trial_id") or os.path.basename(result.path)),
        config=dict(metrics.get("config") or {}),
        results=rows,
        error=_describe(result.error) if result.error is not None else None,
    )


def trial_error(error: BaseException) -> BaseException:
    """The exception a trial raised, out of Ray's wrapper (which does not pickle)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def _describe(error: BaseException) -> str:
    cause = trial_error(error)
    code = cause.code if isinstance(cause, TrainforgeError) else type(cause).__name__
    lines = [line for line in str(cause).splitlines() if line.strip()]
    return f"[{code}] {lines[-1] if lines else type(cause).__name__}"[:1000]


class TrialEvents(Callback):
    """Tune callback on the driver: one API message per trial end and failure.

    Plain attributes only: Tune pickles its callbacks into the experiment state.
    """

    def __init__(self, max_epochs: int, metric: str) -> None:
        self.max_epochs = max_epochs
        self.metric = metric

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        last = trial.last_result or {}
        epochs = int(last.get("epoch") or 0)
        early = epochs < self.max_epochs
        JobReporter.from_env().message(
            f"trial {trial.trial_id} finished after {epochs} epoch(s)"
            + (" (stopped early)" if early else ""),
            trial=trial.trial_id, epochs=epochs, stopped_early=early,
            metric=_float(last.get(self.metric)))

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any,
                       **info: Any) -> None:
        try:
            error = trial.get_pickled_error()
        except Exception:  # the message matters more than its detail
            error = None
        JobReporter.from_env().message(
            f"trial {trial.trial_id} failed", trial=trial.trial_id,
            error=_describe(error) if error is not None else None)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
