"""The best trial becomes the job's model: evaluated on the held-out split, reported and
uploaded to ``jobs/<id>/train/`` exactly like a train job's run, then published by the
entrypoint with :func:`jobs.export.publish.publish_result`.

Runs as a Ray task with one trial's resources, so evaluation uses a GPU node when the sweep
does, and the node's dataset cache.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.core import adapter, dataset_step
from jobs.core.artifacts import JobArtifacts
from jobs.core.steps import configure_logging, step
from jobs.sweep.node import node_dataset
from jobs.sweep.trial import unpack_checkpoint
from jobs.train.report import build_report
from jobs.train.worker import upload_outputs
from trainforge.errors import TrainingFailed
from trainforge.reporting import JobReporter
from trainforge.spec import JobSpec


@dataclass(frozen=True)
class FinishConfig:
    """Plain data for the finishing task."""

    spec: JobSpec  # the sweep's spec with the best trial's hyperparameters as its train section
    job_id: str
    artifacts_uri: str
    work_root: str
    cache_dir: str
    dataset_fingerprint: str
    device: str
    checkpoint: Any  # ray.tune.Checkpoint of the best trial's last epoch
    sweep_summary: dict[str, Any]  # report.json's "sweep" section
    plot_png: bytes  # the trials' mAP50-95 per epoch, uploaded with the run's files
    plot_name: str


def finish_best_trial(cfg: FinishConfig) -> dict[str, float]:
    """Evaluate the best trial's best.pt, write report.json and upload the run's outputs.

    Returns:
        The evaluation's mean metrics.

    Raises:
        TrainingFailed: the trial's checkpoint lacks its weights.
        TrainforgeError: the dataset is unavailable on this node.
    """
    configure_logging()
    log = logging.getLogger(__name__)
    work = Path(cfg.work_root) / cfg.job_id / "best"
    shutil.rmtree(work, ignore_errors=True)
    run_dir = work / "run"
    adapter.prepare_environment(work / "ultralytics")
    with step("best-trial-checkpoint") as out:
        unpack_checkpoint(cfg.checkpoint, run_dir)
        best, last = run_dir / "best.pt", run_dir / "last.pt"
        if not last.is_file():
            raise TrainingFailed(f"the best trial's checkpoint {cfg.checkpoint.path} has no "
                                 "last.pt")
        if not best.is_file():  # no epoch ever improved fitness: the last one stands in
            shutil.copyfile(last, best)
        for path in (best, last):
            adapter.finalize_checkpoint(path)  # what Ultralytics does at the end of a run
        (run_dir / cfg.plot_name).write_bytes(cfg.plot_png)
        out.text = f"{cfg.checkpoint.path} -> {run_dir}"
    data = node_dataset(cfg.spec.dataset.uri, Path(cfg.cache_dir), cfg.dataset_fingerprint)
    JobReporter.from_env().message(
        f"evaluating the best trial {cfg.sweep_summary.get('best_trial')}",
        trial=cfg.sweep_summary.get("best_trial"), bytes_downloaded=data.bytes_downloaded,
        dataset_cached=data.cached)
    data_yaml = dataset_step.write_local_data_yaml(data.path, work / "data.yaml")
    split = "test" if dataset_step.has_split(data_yaml, "test") else "val"
    train = cfg.spec.train
    with step("evaluate") as out:
        settings = adapter.EvalSettings(data_yaml, split, train.imgsz, train.batch, cfg.device)
        evaluation = adapter.evaluate(best, settings, work / "eval", plots=train.plots,
                                      verbose=True)
        out.text = (f"best trial's best.pt on {split}: mAP50={evaluation.metrics['mAP50']:.4f} "
                    f"mAP50-95={evaluation.metrics['mAP50-95']:.4f}")
    report = build_report(
        spec=cfg.spec, job_id=cfg.job_id, evaluation=evaluation,
        class_names=dataset_step.class_names(data_yaml),
        dataset_fingerprint=cfg.dataset_fingerprint, results_csv=run_dir / "results.csv",
        hyperparameters=adapter.read_effective_hyperparameters(run_dir), resumed_at=None,
    )
    report["sweep"] = cfg.sweep_summary
    artifacts = JobArtifacts(cfg.artifacts_uri, cfg.job_id)
    with step("upload-outputs") as out:
        count = upload_outputs(artifacts, adapter.RunOutputs(run_dir, best, last,
                                                             run_dir / "results.csv"),
                               evaluation, report)
        out.text = f"{count} files to {artifacts.uri(artifacts.train_output(''))}"
    shutil.rmtree(work, ignore_errors=True)
    log.info("best trial %s published as the job's run", cfg.sweep_summary.get("best_trial"))
    return evaluation.metrics
