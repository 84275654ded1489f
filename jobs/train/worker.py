"""What runs on the training worker (inside Ray Train): data on this node, train, evaluate.

The worker may run on another node than the entrypoint, and Ray may restart it anywhere, so
it makes its own node-local copies (dataset cache, data.yaml, weights) and always starts
from the job's latest checkpoint in the artifacts store when there is one: an earlier
attempt's, or for a resumed job (services/store/resumption.py) the stopped job's, which the
API copied there. The spec's ``train.epochs`` is the run's total either way: a checkpoint
whose run was asked for another total continues to the spec's.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobs.core import adapter, dataset_step
from jobs.core.artifacts import JobArtifacts
from jobs.core.steps import configure_logging, step
from jobs.core.weights import resolve_weights
from jobs.train.report import build_report
from trainforge.access import AccessRules
from trainforge.datasets.fingerprint import sha256_file
from trainforge.errors import DatasetError, SpecError, TrainingFailed
from trainforge.reporting import JobReporter
from trainforge.spec import JobSpec

log = logging.getLogger(__name__)

#: Files of the finished run that go to ``jobs/<id>/train/`` (plots are added as found).
RUN_FILES = ("best.pt", "last.pt", "results.csv", "args.yaml")


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the worker needs; plain data, so Ray can ship it to any node."""

    spec: JobSpec
    job_id: str
    attempt: int
    artifacts_uri: str
    models_uri: str
    work_root: str  # node-local directory for this job's files
    cache_dir: str  # node-local dataset cache
    dataset_path: str  # where the entrypoint synced the dataset (valid on its node)
    dataset_fingerprint: str
    entrypoint_node: str | None  # Ray node id of the entrypoint, None outside Ray
    #: What the job may read (None: run by hand); checked again before this node reads.
    access: AccessRules | None = None

    @property
    def work_dir(self) -> Path:
        return Path(self.work_root) / self.job_id


def ray_train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker`` for Ray Train's TorchTrainer: every worker (rank) runs it."""
    configure_logging()
    run_worker(config["worker"])


@dataclass(frozen=True)
class Rank:
    """Where this process stands in the job's group of training workers."""

    rank: int  # 0 trains, and also evaluates, uploads and reports
    size: int
    device: str  # Ultralytics' device: "cpu", or this rank's own GPU index

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def work_dir(self, cfg: WorkerConfig) -> Path:
        # Ranks on one node keep apart: each deletes and rewrites its own run directory.
        return cfg.work_dir if self.lead else cfg.work_dir / f"rank-{self.rank}"


def run_worker(cfg: WorkerConfig) -> None:
    """Prepare this node, train (resuming if a checkpoint exists), evaluate, upload.

    Every rank syncs the dataset, fetches the same checkpoint and trains its share of each
    batch; rank 0 alone claims the run, posts events, evaluates and uploads.

    Raises:
        TrainforgeError: a step failed for a reason the job can name (weights, dataset…).
    """
    me = _rank(cfg.spec)
    work = me.work_dir(cfg)
    adapter.prepare_environment(work / "ultralytics")
    artifacts = JobArtifacts(cfg.artifacts_uri, cfg.job_id)
    reporter = JobReporter.from_env() if me.lead else None
    spec = cfg.spec
    if cfg.access is not None:  # this node reads on its own: the same rules as the entrypoint
        cfg.access.check_spec(spec.dataset.uri, spec.model.base)
    _announce(me, reporter, cfg.attempt, spec.train.batch)
    with step("worker-dataset") as out:
        data_root = _local_dataset(cfg)
        data_yaml = dataset_step.write_local_data_yaml(data_root, work / "data.yaml")
        out.text = f"{data_root} -> {data_yaml}"
    with step("resume-check") as out:
        resume = _fetch_checkpoint(artifacts, work / "resume")
        _same_checkpoint_everywhere(me, resume)
        info = _to_spec_epochs(resume, spec, reporter) if resume else None
        out.text = (f"checkpoint after epoch {info.epoch} of {info.epochs}" if info
                    else "none: a fresh run")
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a restarted worker starts from the store
    with step("train") as out:
        if reporter is not None and (info is None or info.epoch < info.epochs):
            _claim_run(artifacts, spec, reporter, cfg.attempt)
        if resume is None or info is None:
            weights = resolve_weights(spec.model.base, work / "weights",
                                      models_uri=cfg.models_uri)
            outputs = adapter.train(
                adapter.train_overrides(spec.train, data_yaml=data_yaml, model=weights,
                                        run_dir=run_dir, device=me.device,
                                        plots=spec.train.plots),
                EpochHooks(artifacts, cfg.attempt))
            out.text = f"{spec.train.epochs} epochs from {weights}"
        elif info.epoch >= info.epochs:
            if not me.lead:
                return  # nothing left to train; rank 0 publishes what the earlier try trained
            outputs = _finished_run(resume, run_dir, info)
            out.text = f"all {info.epochs} epochs were done by an earlier try"
        else:
            if not info.resumable:
                raise TrainingFailed(f"checkpoint {resume} holds no optimizer state; delete "
                                     f"{artifacts.uri(artifacts.checkpoint())} to start over")
            if reporter is not None:
                reporter.notice(f"resuming from epoch {info.epoch + 1}",
                                resumed_epoch=info.epoch + 1, attempt=cfg.attempt,
                                workers=me.size)
            adapter.write_results_csv(info.results, run_dir / "results.csv")
            if me.lead:  # another rank's best.pt would make its final_eval validate, alone
                _keep_best(resume, run_dir)
            outputs = adapter.train(
                {"model": str(resume), **adapter.resume_overrides(
                    data_yaml=data_yaml, run_dir=run_dir, device=me.device,
                    plots=spec.train.plots)},
                EpochHooks(artifacts, cfg.attempt))
            out.text = f"epochs {info.epoch + 1}-{info.epochs} resumed from {resume}"
    if not me.lead:
        shutil.rmtree(work, ignore_errors=True)
        return
    split = "test" if dataset_step.has_split(data_yaml, "test") else "val"
    with step("evaluate") as out:
        settings = adapter.EvalSettings(data_yaml, split, spec.train.imgsz, spec.train.batch,
                                        me.device)
        evaluation = adapter.evaluate(outputs.best, settings, work / "eval",
                                      plots=spec.train.plots, verbose=True)
        out.text = (f"best.pt on {split}: mAP50={evaluation.metrics['mAP50']:.4f} "
                    f"mAP50-95={evaluation.metrics['mAP50-95']:.4f}")
    report = build_report(
        spec=spec, job_id=cfg.job_id, evaluation=evaluation,
        class_names=dataset_step.class_names(data_yaml),
        dataset_fingerprint=cfg.dataset_fingerprint, results_csv=outputs.results_csv,
        hyperparameters=adapter.read_effective_hyperparameters(outputs.run_dir),
        resumed_at=info.epoch + 1 if info is not None and info.epoch < info.epochs else None,
    )
    with step("upload-outputs") as out:
        count = upload_outputs(artifacts, outputs, evaluation, report)
        out.text = f"{count} files to {artifacts.uri(artifacts.train_output(''))}"
    shutil.rmtree(work / "resume", ignore_errors=True)


def _rank(spec: JobSpec) -> Rank:
    """This process's rank and device in the process group Ray Train set up (rank 0 of 1
    without one)."""
    size = adapter.distributed.world_size()
    if size == 1:
        return Rank(0, 1, adapter.device_for(spec.resources.gpus_per_worker))
    device = "cpu"
    if spec.resources.gpus_per_worker:
        import ray.train.torch

        # Ray Train shows a node's workers all of their GPUs (for NCCL) and names this one's.
        device = str(ray.train.torch.get_device().index)
    return Rank(adapter.distributed.world_rank(), size, device)


def _announce(me: Rank, reporter: JobReporter | None, attempt: int, batch: int) -> None:
    """Rank 0 posts one "training worker started" event per rank (pid, host, device), and
    says so when the global batch does not split evenly."""
    here = {"rank": me.rank, "pid": os.getpid(), "host": socket.gethostname(),
            "device": me.device}
    peers = adapter.distributed.all_gather(here)
    if reporter is None:
        return
    for peer in peers:
        reporter.message("training worker started", attempt=attempt, workers=me.size, **peer)
    if batch % me.size:
        reporter.notice(
            f"train.batch {batch} over {me.size} workers: {batch // me.size} images per worker, "
            f"{batch // me.size * me.size} per step (use a multiple of {me.size} to train "
            f"with all {batch})", batch=batch, workers=me.size)


def _same_checkpoint_everywhere(me: Rank, resume: Path | None) -> None:
    """Every rank must resume from the same last.pt (or none): compare their sha256.

    Raises:
        TrainingFailed: the ranks fetched different checkpoints.
    """
    if me.size == 1:
        return
    digest = sha256_file(resume) if resume is not None else None
    seen = adapter.distributed.all_gather(digest)
    if len(set(seen)) > 1:
        raise TrainingFailed(f"the training workers fetched different checkpoints ({seen}); "
                             "retry the job")


def _to_spec_epochs(resume: Path, spec: JobSpec, reporter: JobReporter | None
                    ) -> adapter.CheckpointInfo:
    """What the checkpoint holds, made to continue to the spec's ``train.epochs``.

    The two differ only for a resumed job whose epochs were changed (``jobs resume --epochs``):
    a retry's checkpoint was written by a run of the same spec. Every rank rewrites its own
    copy the same way (after their sha256 were compared).

    Raises:
        SpecError: the spec asks for fewer epochs than the checkpoint already holds.
    """
    info = adapter.read_checkpoint(resume)
    wanted = spec.train.epochs
    if info.epochs == wanted:
        return info
    if wanted < info.epoch:
        raise SpecError(f"train.epochs is {wanted}, but the checkpoint already holds "
                        f"{info.epoch} epochs; resume with at least {info.epoch}")
    if reporter is not None:
        change = (f"from epoch {info.epoch + 1} on, the learning rate follows the schedule of "
                  f"a {wanted}-epoch run" if wanted > info.epoch else
                  "nothing more to train: the job evaluates and publishes what it holds")
        reporter.message(
            f"training to {wanted} epochs instead of the {info.epochs} the checkpoint's run "
            f"was asked for: {change}", epochs=wanted, checkpoint_epochs=info.epochs,
            checkpoint_epoch=info.epoch)
    return adapter.set_checkpoint_epochs(resume, wanted)


def _claim_run(artifacts: JobArtifacts, spec: JobSpec, reporter: JobReporter,
               attempt: int) -> None:
    """Count this training run against the job's budget of ``retries + 1`` runs.

    Ray Train restarts a failed worker and the dispatcher (or KubeRay) relaunches a failed
    job: one shared budget keeps a failing job from training (retries + 1)² times.

    Raises:
        RetriesExhausted: the budget is spent.
    """
    max_runs = spec.retries + 1
    run = artifacts.claim_run(max_runs)
    reporter.message(f"training run {run} of at most {max_runs}", run=run, max_runs=max_runs,
                     attempt=attempt)


def _local_dataset(cfg: WorkerConfig) -> Path:
    """The entrypoint's copy when this is its node; otherwise this node's cache."""
    synced = Path(cfg.dataset_path)
    if cfg.entrypoint_node is not None and cfg.entrypoint_node == _ray_node_id() \
            and synced.is_dir():
        return synced
    result = dataset_step.sync(cfg.spec.dataset.uri, Path(cfg.cache_dir))
    if result.fingerprint != cfg.dataset_fingerprint:
        raise DatasetError(f"{cfg.spec.dataset.uri} changed while the job ran (fingerprint "
                           f"{result.fingerprint} != {cfg.dataset_fingerprint}); "
                           "publish a new dataset version under a new prefix instead")
    return result.path


def _ray_node_id() -> str | None:
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None


def _fetch_checkpoint(artifacts: JobArtifacts, dest: Path) -> Path | None:
    shutil.rmtree(dest, ignore_errors=True)
    last = dest / "last.pt"
    if not artifacts.download(artifacts.checkpoint("last.pt"), last):
        return None
    artifacts.download(artifacts.checkpoint("best.pt"), dest / "best.pt")
    return last


def _keep_best(last: Path, run_dir: Path) -> None:
    """Put the checkpoint's best.pt where the resumed trainer keeps its own (rank 0's run).

    Ultralytics writes best.pt only when an epoch beats the best fitness it resumed with: a
    resumed run whose epochs never do would otherwise end without a best.pt to evaluate. Only
    rank 0 may have one: Ultralytics' final_eval validates whatever best.pt a rank's run holds,
    and a second rank validating on its own waits for the first in a collective forever.
    """
    best = last.parent / "best.pt"
    if best.is_file():
        (run_dir / "weights").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, run_dir / "weights" / "best.pt")


def _finished_run(last: Path, run_dir: Path, info: adapter.CheckpointInfo
                  ) -> adapter.RunOutputs:
    """An earlier try trained every epoch and died after: reuse its checkpoints."""
    weights = run_dir / "weights"
    weights.mkdir(parents=True)
    best = last.parent / "best.pt"
    shutil.copyfile(best if best.exists() else last, weights / "best.pt")
    shutil.copyfile(last, weights / "last.pt")
    for path in (weights / "best.pt", weights / "last.pt"):
        adapter.finalize_checkpoint(path)
    adapter.write_results_csv(info.results, run_dir / "results.csv")
    (run_dir / "args.yaml").write_text(yaml.safe_dump(info.train_args, sort_keys=False))
    return adapter.RunOutputs(run_dir, weights / "best.pt", weights / "last.pt",
                              run_dir / "results.csv")


def upload_outputs(artifacts: JobArtifacts, outputs: adapter.RunOutputs,
                   evaluation: adapter.Evaluation, report: dict[str, Any]) -> int:
    """Upload a finished run, its evaluation plots and report.json to ``jobs/<id>/train/``
    (what :func:`jobs.export.publish.publish_result` publishes); returns the file count."""
    files = {name: outputs.run_dir / name for name in ("results.csv", "args.yaml")}
    files.update({"best.pt": outputs.best, "last.pt": outputs.last})
    files.update({p.name: p for p in outputs.plots()})
    # Evaluation plots keep a prefix: the training run writes plots with the same names.
    files.update({f"{evaluation.split}_{p.name}": p for p in evaluation.plots})
    for name, path in sorted(files.items()):
        if path.is_file():
            artifacts.upload(path, artifacts.train_output(name))
    artifacts.put_json(artifacts.train_output("report.json"), report)
    return len(files) + 1


class EpochHooks:
    """Per-epoch side effects: checkpoint upload, API progress, a Ray metric, one log line.

    They run on rank 0 only (see :class:`jobs.core.adapter.TrainingHooks`).
    """

    def __init__(self, artifacts: JobArtifacts, attempt: int) -> None:
        self.artifacts = artifacts
        self.attempt = attempt

    def on_checkpoint(self, epoch: int, last: Path, best: Path | None) -> None:
        # last.pt first: a restart resumes from it, and best.pt is only ever newer or equal.
        self.artifacts.upload(last, self.artifacts.checkpoint("last.pt"))
        if best is not None:
            self.artifacts.upload(best, self.artifacts.checkpoint("best.pt"))

    def on_epoch(self, result: adapter.EpochResult) -> None:
        m = result.metrics
        log.info("epoch %d/%d: mAP50=%.4f mAP50-95=%.4f box_loss=%.4f (%.1fs, %.1f img/s)",
                 result.epoch, result.epochs, m.get("metrics/mAP50(B)", float("nan")),
                 m.get("metrics/mAP50-95(B)", float("nan")), m.get("train/box_loss", float("nan")),
                 m.get("epoch_seconds", float("nan")), m.get("images_per_second", float("nan")))
        JobReporter.from_env().progress(result.epoch, result.epochs, m, attempt=self.attempt)
        _ray_metric(self.artifacts.job_id, result)


_GAUGES: dict[str, Any] = {}


def _ray_metric(job_id: str, result: adapter.EpochResult) -> None:
    """Set the epoch's metrics as a Ray metric, when running in a Ray worker.

    Not ``ray.train.report``: Ray Train makes it a barrier that every rank must reach, and
    only rank 0 has the epoch's metrics (checkpoints go to the artifacts store directly).
    """
    import ray

    if not ray.is_initialized():
        return
    from ray.util.metrics import Gauge

    if "gauge" not in _GAUGES:
        _GAUGES["gauge"] = Gauge("trainforge_train_epoch_metric",
                                 description="Last finished epoch's metrics of a training job",
                                 tag_keys=("job_id", "metric"))
    gauge = _GAUGES["gauge"]
    for name, value in {**result.metrics, "epoch": float(result.epoch)}.items():
        gauge.set(value, tags={"job_id": job_id, "metric": name})
