"""Ray Train around the training worker: ``resources.workers`` TorchTrainer workers, one
data-parallel rank each, in a process group formed through trainforge's authenticated
rendezvous (jobs/train/group.py; NCCL on GPUs, gloo on CPUs); Ultralytics' trainer runs as
one rank in each (jobs/core/adapter/distributed.py). When any worker dies, Ray restarts the
whole group, up to what the job's budget of runs has left, and every rank resumes from the
job's last checkpoint in the artifacts store. Connecting to Ray is jobs/core/ray_cluster.py's.
"""

from __future__ import annotations

import logging
from typing import Any

from jobs.core.artifacts import JobArtifacts
from jobs.core.ray_cluster import storage_for
from jobs.train.group import GroupConfig
from jobs.train.worker import WorkerConfig, ray_train_loop
from trainforge.errors import TrainforgeError, TrainingFailed
from trainforge.spec import Resources

log = logging.getLogger(__name__)


def run(cfg: WorkerConfig) -> None:
    """Train on Ray: the spec's workers and resources, and as many group restarts as the
    job's budget of ``retries + 1`` training runs has left (jobs/train/worker.py counts them).

    Raises:
        TrainforgeError: a worker's own error (its code kept) once retries are spent.
        TrainingFailed: any other failure of the run.
    """
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = storage_for(cfg.artifacts_uri, cfg.job_id)
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"worker": cfg},
        torch_config=GroupConfig(),
        scaling_config=scaling_config(cfg.spec.resources),
        run_config=RunConfig(
            name=cfg.job_id,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            # Restarts left in the job's budget of runs (earlier attempts spent some).
            failure_config=FailureConfig(max_failures=max(
                0, cfg.spec.retries - JobArtifacts(cfg.artifacts_uri, cfg.job_id).runs_used())),
        ),
    )
    try:
        trainer.fit()
    except Exception as exc:
        cause = _worker_error(exc)
        if cause is not None:
            raise cause from None
        raise TrainingFailed(f"training failed after {cfg.spec.retries} retries: "
                             f"{_first_line(exc)}") from None


def scaling_config(resources: Resources) -> Any:
    """Ray Train's ScalingConfig for a job's ``resources``: one worker per rank."""
    from ray.train import ScalingConfig

    per_worker: dict[str, float] = {"CPU": float(resources.cpus)}
    if resources.gpus_per_worker:
        per_worker["GPU"] = float(resources.gpus_per_worker)
    return ScalingConfig(num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0,
                         resources_per_worker=per_worker)


def _worker_error(exc: BaseException) -> TrainforgeError | None:
    """The TrainforgeError a worker raised, if that is what ended the run."""
    failures = getattr(exc, "worker_failures", None) or {}
    for failure in failures.values():
        seen: BaseException | None = failure
        while seen is not None:
            if isinstance(seen, TrainforgeError):
                return seen
            seen = getattr(seen, "cause", None) or seen.__cause__
    return None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:3])[:1000] or type(exc).__name__
