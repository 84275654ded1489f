"""``python -m jobs.sweep --spec URI``: a hyperparameter sweep on Ray Tune; its best trial
becomes the job's model.

Steps, each logging one outcome line with its duration: read the spec; sync the dataset into
the node-local cache; validate it strictly; resolve the base weights (the train job's steps);
connect to Ray; run the trials in parallel (or resume the job's interrupted experiment from the
artifacts store), each trial training through the same Ultralytics adapter as a train job,
proving its trainer used its sampled config and reporting every epoch to Tune (ASHA may stop
it) and to the API; evaluate the best trial on the test split; publish it like a train job.

Exit status, events and the shipped log are the train job's: 0 means the model is published;
otherwise a FAILED StateEvent with an ``error_code`` and exit 1; SIGTERM exits 143.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from jobs.core import ray_cluster, runtime
from jobs.core.runtime import JobContext, prepare_job
from jobs.core.steps import step
from jobs.export.publish import publish_result
from jobs.sweep import results
from jobs.sweep.finish import FinishConfig, finish_best_trial
from jobs.sweep.space import MODE, SweepPlan, trial_params
from jobs.sweep.trial import TrialContext
from jobs.train.promote import promote_step
from trainforge.errors import (
    HyperparameterMismatch,
    SweepFailed,
    TrainforgeError,
)
from trainforge.events import SWEEP_METRIC, SWEEP_TRIALS
from trainforge.reporting import JobReporter
from trainforge.spec import JobKind, JobSpec, SweepParams

log = logging.getLogger("jobs.sweep")


def main(argv: list[str] | None = None) -> int:
    """Run one sweep job; returns the process exit status."""
    return runtime.main(argv, run=run_sweep, prog="python -m jobs.sweep", description=__doc__)


def run_sweep(ctx: JobContext, reporter: JobReporter) -> str:
    """The sweep job's steps in order; returns the published manifest's URI.

    Raises:
        TrainforgeError: a step failed; ``code`` says which kind of failure.
    """
    from jobs.sweep import tuning  # imports Ray Tune: only once the job really runs

    prepared = prepare_job(ctx, reporter, JobKind.SWEEP)
    spec, synced = prepared.spec, prepared.synced
    with step("ray-connect") as out:
        cluster = _connect(spec, _sweep_of(spec))
        out.text = cluster.description
        runtime.install_cancel_handler()  # ray.init installs its own handler
    spec = ray_cluster.fit_to_cluster(spec, cluster, reporter)
    sweep = _sweep_of(spec)
    with step("sweep-plan") as out:
        import ray

        plan = SweepPlan.of(spec, ray.cluster_resources())  # type: ignore[no-untyped-call]
        out.text = plan.describe()
    # What the watching user's progress bar counts against ("trial n of m, best so far").
    reporter.notice(f"sweep: {plan.describe()}",
                    **{SWEEP_TRIALS: sweep.trials, SWEEP_METRIC: sweep.metric})
    trial_ctx = TrialContext(
        spec=spec, job_id=ctx.job_id, attempt=ctx.attempt, models_uri=ctx.models_uri,
        work_root=str(ctx.home / "work"), cache_dir=str(ctx.cache_dir),
        dataset_fingerprint=synced.fingerprint, access=ctx.access,
    )
    with step("sweep") as out:
        outcome = tuning.run(plan, trial_ctx, ctx.artifacts.artifacts_uri, reporter)
        rows = results.trial_table(outcome.records, metric=sweep.metric,
                                   max_epochs=plan.max_epochs)
        out.text = _outcome_text(rows, outcome.restored)
    _refuse_mismatches(outcome.grid)
    best = results.best_row(rows)
    if best is None:
        errors = "; ".join(sorted({r.error for r in rows if r.error}))[:2000]
        raise SweepFailed(f"no trial of the sweep reported {sweep.metric}"
                          + (f"; trial errors: {errors}" if errors else ""))
    reporter.notice(f"best trial {best.trial_id}: {sweep.metric}={best.best_metric:.4f} at "
                    f"epoch {best.best_epoch}", trial=best.trial_id,
                    metric=best.best_metric, epoch=best.best_epoch)
    with step("best-trial") as out:
        metrics = _finish(ctx, spec, trial_ctx, plan, rows, best, outcome.grid)
        out.text = (f"trial {best.trial_id} on the held-out split: "
                    f"mAP50-95={metrics['mAP50-95']:.4f}")
    with step("publish") as out:
        published = publish_result(spec, ctx.job_id, ctx.artifacts, ctx.models_uri,
                                   ctx.work_dir, data_yaml=prepared.data_yaml, reporter=reporter)
        out.text = published.manifest_uri + ("" if published.created else " (already there)")
    reporter.message("model published", manifest=published.manifest_uri, version=ctx.job_id,
                     trial=best.trial_id)
    promote_step(spec, ctx.job_id, models_uri=ctx.models_uri, data_yaml=prepared.data_yaml,
                 work_dir=ctx.work_dir, artifacts=ctx.artifacts, reporter=reporter,
                 dataset_fingerprint=prepared.synced.fingerprint)
    return published.manifest_uri


def _sweep_of(spec: JobSpec) -> SweepParams:
    if spec.sweep is None:  # JobSpec refuses kind sweep without the section; kept for mypy
        raise SweepFailed("the spec has no sweep section")
    return spec.sweep


def _connect(spec: JobSpec, sweep: SweepParams) -> ray_cluster.Cluster:
    """Ray, sized for one trial when it is a private local Ray."""
    needs = spec.resources.model_copy(update={
        "workers": sweep.workers_per_trial,
        "gpus_per_worker": 1 if sweep.gpus_per_trial > 0 else 0,
        "cpus": math.ceil(sweep.cpus_per_trial),
    })
    return ray_cluster.connect(needs)


def _outcome_text(rows: list[results.TrialRow], restored: bool) -> str:
    finished = sum(r.status == "finished" for r in rows)
    early = sum(r.stopped_early for r in rows)
    errored = sum(r.status == "error" for r in rows)
    epochs = sum(r.epochs_run for r in rows)
    return (f"{len(rows)} trials{' (restored experiment)' if restored else ''}: {finished} "
            f"finished ({early} stopped early), {errored} errored; {epochs} epochs in all")


def _refuse_mismatches(grid: Any) -> None:
    """A trial that trained with other values than sampled makes the whole sweep suspect.

    Raises:
        HyperparameterMismatch: the first such trial's error.
    """
    from jobs.sweep.tuning import trial_error

    for result in grid:
        if result.error is None:
            continue
        cause = trial_error(result.error)
        if isinstance(cause, HyperparameterMismatch):
            raise HyperparameterMismatch(cause.message) from None


def _finish(ctx: JobContext, spec: JobSpec, trial_ctx: TrialContext, plan: SweepPlan,
            rows: list[results.TrialRow], best: results.TrialRow, grid: Any) -> dict[str, float]:
    """Evaluate, report and upload the best trial on a node with one trial's resources."""
    import ray

    from jobs.sweep.tuning import trial_error

    checkpoint = next((r.checkpoint for r in grid
                       if (r.metrics or {}).get("trial_id") == best.trial_id), None)
    if checkpoint is None:
        raise SweepFailed(f"the best trial {best.trial_id} left no checkpoint in "
                          f"{ctx.artifacts.uri('')}")
    sweep = plan.sweep
    best_spec = spec.model_copy(update={"train": trial_params(spec.train, best.config)})
    summary = results.summary(rows, best, plan={
        "searcher": sweep.searcher, "scheduler": sweep.scheduler, "metric": sweep.metric,
        "mode": MODE, "max_epochs": plan.max_epochs, "max_concurrent_trials": plan.concurrency,
        "space": {k: v.model_dump(exclude_none=True) for k, v in sorted(sweep.space.items())},
    })
    with tempfile.TemporaryDirectory() as tmp:
        png = results.plot(rows, Path(tmp) / results.PLOT_NAME, best=best.trial_id,
                           title=f"{spec.name}: {len(rows)} trials, {sweep.scheduler.upper()}, "
                                 f"{sweep.searcher} search").read_bytes()
    cfg = FinishConfig(
        spec=best_spec, job_id=ctx.job_id, artifacts_uri=ctx.artifacts.artifacts_uri,
        work_root=trial_ctx.work_root, cache_dir=trial_ctx.cache_dir,
        dataset_fingerprint=trial_ctx.dataset_fingerprint, device=trial_ctx.device,
        checkpoint=checkpoint, sweep_summary=summary, plot_png=png,
        plot_name=results.PLOT_NAME,
    )
    task = ray.remote(finish_best_trial).options(
        num_cpus=sweep.cpus_per_trial, num_gpus=sweep.gpus_per_trial,
        max_retries=spec.retries, retry_exceptions=False)
    try:
        metrics: dict[str, float] = ray.get(task.remote(cfg))
    except Exception as exc:
        cause = trial_error(exc)  # Ray's wrapper around what the task raised
        if isinstance(cause, TrainforgeError):
            raise cause from None
        raise SweepFailed(f"evaluating the best trial {best.trial_id} failed: {exc}") from None
    return metrics
