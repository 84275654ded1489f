"""One sweep trial (a Ray Tune function trainable): train one sampled config, epoch by epoch.

A trial trains through the same Ultralytics adapter as a train job. Before its first epoch
it reads the trainer's ``args.yaml`` back and refuses to train unless every hyperparameter
equals the trial's own config (:class:`HyperparameterMismatch`). After every epoch it reports
the metrics to Tune (which may stop it, ASHA) and to the API (a ProgressEvent carrying the
trial id), with a checkpoint, so that a restored sweep continues the trial where it was.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.core import adapter, dataset_step
from jobs.core.steps import configure_logging
from jobs.sweep import ranks
from jobs.sweep.node import node_dataset, node_weights
from jobs.sweep.space import TIME_ATTR, trial_params
from trainforge.access import AccessRules
from trainforge.errors import HyperparameterMismatch, TrainingFailed
from trainforge.reporting import JobReporter
from trainforge.spec import JobSpec, TrainParams

log = logging.getLogger(__name__)

#: Files of a run that make up a trial checkpoint: enough to resume it, or to publish it.
CHECKPOINT_FILES = ("last.pt", "best.pt", "results.csv", "args.yaml")
#: Stands for best.pt in a checkpoint of an epoch that improved: best.pt is then a byte copy
#: of last.pt, which need not be stored twice.
BEST_IS_LAST = "best-is-last"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one sweep shares; plain data, so Ray ships it to any node."""

    spec: JobSpec
    job_id: str
    attempt: int
    models_uri: str
    work_root: str  # node-local directory for the job's files
    cache_dir: str  # node-local dataset cache
    dataset_fingerprint: str
    plots: bool = False  # trial run plots are never published: skip drawing them
    #: What the job may read (None: run by hand); a trial checks it again before its reads.
    access: AccessRules | None = None

    @property
    def work_dir(self) -> Path:
        return Path(self.work_root) / self.job_id

    @property
    def device(self) -> str:
        # Ray hides every GPU but the trial's own: a (fraction of a) GPU is device 0.
        sweep = self.spec.sweep
        return adapter.device_for(1 if sweep is not None and sweep.gpus_per_trial > 0 else 0)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    """Ray Tune trainable: train ``config`` (resuming from Tune's checkpoint if there is one),
    in this process, or as rank 0 of ``sweep.workers_per_trial`` ranks (jobs/sweep/ranks.py).

    Args:
        config: the sampled ``{hyperparameter: value}`` of this trial.
        ctx: the sweep's shared context (bound with ``tune.with_parameters``).

    Raises:
        HyperparameterMismatch: the trainer would train with other values than ``config``.
        TrainforgeError: the dataset or the weights are unavailable.
    """
    import ray
    from ray import tune

    configure_logging()
    trial_id = tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    sweep = ctx.spec.sweep
    if sweep is None or sweep.workers_per_trial == 1:
        train_trial(config, ctx, trial_id, checkpoint)
        shutil.rmtree(ctx.work_dir / "trials" / trial_id, ignore_errors=True)
        return
    host = ranks.open_group(sweep.workers_per_trial, gpus=sweep.gpus_per_trial > 0)
    others = ranks.start_other_ranks(
        host.invitation, functools.partial(train_trial, config, ctx, trial_id, checkpoint),
        cpus=sweep.cpus_per_trial, gpus=sweep.gpus_per_trial)
    try:
        ranks.join(host.invitation, 0, host=host)
        train_trial(config, ctx, trial_id, checkpoint)
        ray.get(others)  # a rank's own error, if one failed after rank 0 finished
    finally:
        ranks.leave()
    shutil.rmtree(ctx.work_dir / "trials" / trial_id, ignore_errors=True)


def train_trial(config: dict[str, Any], ctx: TrialContext, trial_id: str, checkpoint: Any,
                rank: int = 0) -> None:
    """Train one trial as ``rank`` (0, the one that reports, unless the trial is
    data-parallel): its node's dataset, Tune's checkpoint restored, Ultralytics' trainer."""
    params = trial_params(ctx.spec.train, config)
    trial_dir = ctx.work_dir / "trials" / trial_id
    if rank:
        trial_dir = trial_dir / f"rank-{rank}"  # ranks on one node keep apart
    shutil.rmtree(trial_dir, ignore_errors=True)  # a restarted trial starts from its checkpoint
    # One settings dir per job and node: Tune may run several trials in one process, and
    # Ultralytics reads its settings once per process.
    adapter.prepare_environment(ctx.work_dir / "ultralytics")
    # A trial is a Ray process of its own: harden its loading before it reads a checkpoint,
    # the base weights or the labels (the adapter's loaders also do it; this says so here).
    adapter.harden_loading()
    if ctx.access is not None:  # this node reads on its own: the entrypoint's rules again
        ctx.access.check_spec(ctx.spec.dataset.uri, ctx.spec.model.base)
    data = node_dataset(ctx.spec.dataset.uri, Path(ctx.cache_dir), ctx.dataset_fingerprint)
    data_yaml = dataset_step.write_local_data_yaml(data.path, trial_dir / "data.yaml")
    run_dir = trial_dir / "run"
    resumed_at = _restore(checkpoint, run_dir)
    if resumed_at is not None and resumed_at > params.epochs:
        log.info("trial %s: all %d epochs were done before the restart", trial_id, params.epochs)
        return
    if resumed_at is not None:
        overrides = {"model": str(run_dir / "weights" / "last.pt"), **adapter.resume_overrides(
            data_yaml=data_yaml, run_dir=run_dir, device=ctx.device, plots=ctx.plots)}
    else:
        weights = node_weights(ctx.spec.model.base, ctx.work_dir, models_uri=ctx.models_uri)
        overrides = adapter.train_overrides(params, data_yaml=data_yaml, model=weights,
                                            run_dir=run_dir, device=ctx.device,
                                            plots=ctx.plots)
    here = {"pid": os.getpid(), "host": socket.gethostname()}
    everyone = adapter.distributed.all_gather(here)
    hooks: adapter.TrainingHooks = TrialHooks(
        trial_id=trial_id, params=params, sampled=dict(config), attempt=ctx.attempt,
        staging=trial_dir / "staging",
        started={"bytes_downloaded": data.bytes_downloaded, "dataset_cached": data.cached,
                 "resumed_at_epoch": resumed_at, **here, "workers": len(everyone),
                 "pids": ",".join(str(p["pid"]) for p in everyone)},
    ) if rank == 0 else _OtherRank()
    adapter.train(overrides, hooks)


class _OtherRank:
    """Hooks of a data-parallel trial's other ranks: rank 0 reports and checkpoints."""

    def on_epoch(self, result: adapter.EpochResult) -> None:
        pass

    def on_checkpoint(self, epoch: int, last: Path, best: Path | None) -> None:
        pass


def _restore(checkpoint: Any, run_dir: Path) -> int | None:
    """Lay Tune's checkpoint out as an Ultralytics run; returns the epoch to continue at."""
    if checkpoint is None:
        return None
    weights = run_dir / "weights"
    weights.mkdir(parents=True)
    unpack_checkpoint(checkpoint, weights)
    last = weights / "last.pt"
    info = adapter.read_checkpoint(last)
    if info.epoch < info.epochs and not info.resumable:
        raise TrainingFailed(f"trial checkpoint {last} holds no optimizer state")
    # A resumed Ultralytics run appends to results.csv: exactly the checkpoint's epochs first.
    adapter.write_results_csv(info.results, run_dir / "results.csv")
    for name in ("results.csv", "args.yaml"):
        (weights / name).unlink(missing_ok=True)
    return info.epoch + 1


def unpack_checkpoint(checkpoint: Any, dest: Path) -> None:
    """Copy a trial checkpoint (``ray.tune.Checkpoint``) into ``dest``, best.pt included."""
    checkpoint.to_directory(str(dest))
    marker = dest / BEST_IS_LAST
    if marker.exists():
        shutil.copyfile(dest / "last.pt", dest / "best.pt")
        marker.unlink()


class TrialHooks:
    """Per-epoch side effects of a trial: the arguments check, Tune, the API, one log line."""

    def __init__(self, *, trial_id: str, params: TrainParams, sampled: dict[str, Any],
                 attempt: int, staging: Path, started: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.params = params
        self.sampled = sampled
        self.attempt = attempt
        self.staging = staging
        self.started = started
        self.run_dir: Path | None = None
        self.improved = False
        self.reporter = JobReporter.from_env()

    def on_train_start(self, run_dir: Path) -> None:
        """The trainer wrote ``args.yaml``: refuse to train with anything but this trial's
        config (and the rest of the spec).

        Raises:
            HyperparameterMismatch: naming every value that differs.
        """
        self.run_dir = run_dir
        mismatches = adapter.hyperparameter_mismatches(self.params, run_dir)
        used = adapter.read_effective_hyperparameters(run_dir)
        mismatches.update({k: (v, used.get(k)) for k, v in self.sampled.items()
                           if k not in mismatches and used.get(k) != v})
        if mismatches:
            raise HyperparameterMismatch(
                f"trial {self.trial_id}: the trainer's {run_dir / 'args.yaml'} differs from the "
                "trial's config: " + "; ".join(f"{k}: config {want!r}, trainer {got!r}"
                                               for k, (want, got) in sorted(mismatches.items())))
        values: dict[str, str | int | float | bool | None] = {
            k: v for k, v in self.sampled.items() if isinstance(v, str | int | float | bool)}
        self.reporter.message(f"trial {self.trial_id}: trainer arguments match its config",
                              trial=self.trial_id, **values, **self.started)

    def on_checkpoint(self, epoch: int, last: Path, best: Path | None) -> None:
        """Checkpoints go to Tune with the epoch's metrics (see :meth:`on_epoch`)."""
        self.improved = best is not None

    def on_epoch(self, result: adapter.EpochResult) -> None:
        from ray import tune

        m = result.metrics
        log.info("trial %s epoch %d/%d: mAP50=%.4f mAP50-95=%.4f (%.1fs)", self.trial_id,
                 result.epoch, result.epochs, m.get("metrics/mAP50(B)", float("nan")),
                 m.get("metrics/mAP50-95(B)", float("nan")), m.get("epoch_seconds", float("nan")))
        self.reporter.progress(result.epoch, result.epochs, m, trial=self.trial_id,
                               attempt=self.attempt)
        if self.run_dir is None:  # on_train_start always runs first; kept for mypy
            raise TrainingFailed(f"trial {self.trial_id}: epoch {result.epoch} before start")
        self.staging.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.staging) as tmp:
            # Copies, not links: Ultralytics rewrites last.pt in place every epoch.
            for name in CHECKPOINT_FILES:
                source = (self.run_dir if name.endswith((".csv", ".yaml"))
                          else self.run_dir / "weights") / name
                if name == "best.pt" and self.improved:
                    (Path(tmp) / BEST_IS_LAST).touch()
                elif source.is_file():
                    shutil.copyfile(source, Path(tmp) / name)
            # Tune copies the checkpoint to the sweep's storage before report() returns.
            tune.report({**m, TIME_ATTR: result.epoch},
                        checkpoint=tune.Checkpoint.from_directory(tmp))
