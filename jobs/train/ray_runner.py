"""Ray Train around the training worker: connect, size, run, map failures.

One TorchTrainer worker holds all of the job's GPUs (Ultralytics runs its own multi-GPU
data parallelism inside it). Ray restarts the worker up to ``spec.retries`` times; a
restarted worker resumes from the job's last checkpoint in the artifacts store.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jobs
import trainforge
from jobs.train.artifacts import JobArtifacts
from jobs.train.worker import WorkerConfig, ray_train_loop
from trainforge import layout
from trainforge.constants import ENV_LOCAL_RAY, ENV_RAY_ADDRESS, ENV_S3_ENDPOINT_URL
from trainforge.errors import ClusterUnavailable, TrainforgeError, TrainingFailed
from trainforge.reporting import JobReporter
from trainforge.spec import JobSpec, Resources
from trainforge.storage import join_key, parse_uri

log = logging.getLogger(__name__)

#: Environment a job's Ray workers need when they do not inherit the entrypoint's.
_FORWARDED_PREFIXES = ("TRAINFORGE_", "YOLO_", "AWS_")
#: Set by Ray's job supervisor in a submitted job's driver: the job's runtime_env is in it.
_RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"
#: The local Ray runs only this job's one worker: a small object store is plenty.
_LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a job joined."""

    description: str  # one line for the log
    gpus: int
    cpus: int
    #: Ray on this machine only: a private one this job started, or the embedded server's
    #: head (TRAINFORGE_LOCAL_RAY), as opposed to a cluster (Ray Jobs API, KubeRay).
    local: bool


def connect(resources: Resources) -> Cluster:
    """Join the cluster in RAY_ADDRESS (the embedded server's warm head when
    TRAINFORGE_LOCAL_RAY is 1), or start a private local Ray sized for the job.

    Raises:
        ClusterUnavailable: RAY_ADDRESS is set but unreachable, or Ray could not start.
    """
    import ray

    address = os.environ.get(ENV_RAY_ADDRESS)
    server_head = bool(address) and os.environ.get(ENV_LOCAL_RAY) == "1"
    try:
        if server_head:
            # The embedded server's head on this machine, started from this very installation:
            # only the job's own variables travel (no code to ship).
            ray.init(address=address, log_to_driver=True, runtime_env={
                "env_vars": _job_env(),
                "worker_process_setup_hook": quiet_local_ray_worker})
            where = f"the embedded server's Ray at {address}"
        elif address:
            ray.init(address=address, runtime_env=_runtime_env(), log_to_driver=True)
            where = f"Ray cluster at {address}"
        else:
            # address="local": never attach to another Ray found on this machine. A new
            # local Ray picks free ports itself (never 6379).
            ray.init(address="local", include_dashboard=False,
                     num_cpus=max(os.cpu_count() or 1, resources.cpus),
                     object_store_memory=_LOCAL_OBJECT_STORE_BYTES, log_to_driver=True,
                     runtime_env={"worker_process_setup_hook": quiet_local_ray_worker})
            where = "a local Ray"
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnavailable(
            f"cannot {'reach the Ray cluster at ' + address if address else 'start a local Ray'}"
            f": {exc}") from None
    available: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    gpus = int(available.get("GPU", 0))
    cpus = int(available.get("CPU", 0))
    return Cluster(f"{where} ({gpus} GPUs, {cpus} CPUs)", gpus, cpus,
                   local=not address or server_head)


def fit_to_cluster(spec: JobSpec, cluster: Cluster, reporter: JobReporter) -> JobSpec:
    """The spec to run on ``cluster``: on a private local Ray with fewer GPUs than the spec
    asks for (a laptop, a CPU-only box running ``trainforge serve``), the job uses what this
    machine has, down to the CPU, and says so in its events; elsewhere it is the spec as is
    (a cluster's own scheduler, and the KubeRay backend's node pools, decide there).

    The GPUs of a sweep's trials (``sweep.gpus_per_trial``) drop to 0 on a machine without a
    GPU; a fraction of a GPU per trial stays as it is where there is one.
    """
    if not cluster.local:
        return spec
    if spec.resources.cpus > cluster.cpus > 0:
        # A worker asking for more CPUs than the machine's Ray has would wait forever.
        log.info("resources.cpus=%d, this machine's Ray has %d: the worker takes %d",
                 spec.resources.cpus, cluster.cpus, cluster.cpus)
        spec = spec.model_copy(update={
            "resources": spec.resources.model_copy(update={"cpus": cluster.cpus})})
    wanted = spec.resources.gpus
    per_trial = spec.sweep.gpus_per_trial if spec.sweep is not None else 0.0
    if wanted <= cluster.gpus and (per_trial == 0 or cluster.gpus > 0):
        return spec
    gpus = min(wanted, cluster.gpus)
    update: dict[str, Any] = {"resources": spec.resources.model_copy(update={"gpus": gpus})}
    if spec.sweep is not None and cluster.gpus == 0:
        update["sweep"] = spec.sweep.model_copy(update={"gpus_per_trial": 0.0})
    on = f"{gpus} GPU(s)" if gpus else "the CPU"
    reporter.message(
        f"the spec asks for resources.gpus={wanted}"
        + (f" (sweep.gpus_per_trial={per_trial:g})" if spec.sweep is not None else "")
        + f" but this machine has {cluster.gpus}: training on {on} instead (only a job on the "
        "embedded server's local Ray adapts to its machine; on a cluster set resources.gpus "
        "to what its nodes have)",
        requested_gpus=wanted, gpus=gpus,
    )
    return spec.model_copy(update=update)


def quiet_local_ray_worker() -> None:
    """Worker setup hook for the dashboard-less local Ray.

    Ray Train's placement-group cleaner polls the state API, which lives in the dashboard;
    without one it warns every few seconds, which would bury the job log.
    """
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner"
                      ).setLevel(logging.ERROR)


def _runtime_env() -> dict[str, Any] | None:
    """Env vars and our packages for workers on a cluster this process did not start."""
    if _RAY_JOB_CONFIG in os.environ:
        return None  # a submitted Ray job: its runtime_env already applies to its workers
    modules = [str(Path(pkg.__file__).parent) for pkg in (trainforge, jobs)
               if pkg.__file__ is not None]
    return {"env_vars": _job_env(), "py_modules": modules}


def _job_env() -> dict[str, str]:
    """The variables of this job that its Ray workers need (they do not inherit ours)."""
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIXES)}


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def storage_for(artifacts_uri: str, job_id: str) -> tuple[str, Any]:
    """Ray Train's (storage_path, storage_filesystem) for ``jobs/<id>/ray/`` of the job.

    s3:// gets a pyarrow S3 filesystem honouring TRAINFORGE_S3_ENDPOINT_URL; file:// is a
    local path (Ray then uses the local filesystem).
    """
    scheme, bucket, prefix = parse_uri(artifacts_uri.rstrip("/") + "/")
    key = join_key(prefix, layout.ray_storage_prefix(job_id)).rstrip("/")
    if scheme == "file":
        return "/" + key, None
    from pyarrow import fs  # type: ignore[import-untyped]

    endpoint = os.environ.get(ENV_S3_ENDPOINT_URL)
    options: dict[str, Any] = {}
    if endpoint:
        parsed = urlparse(endpoint)
        options = {"endpoint_override": parsed.netloc or parsed.path,
                   "scheme": parsed.scheme or "https"}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return f"{bucket}/{key}", fs.S3FileSystem(**options)


def run(cfg: WorkerConfig) -> None:
    """Train on Ray: one worker, the spec's resources, and as many restarts as the job's budget
    of ``retries + 1`` training runs has left (jobs/train/worker.py counts them).

    Raises:
        TrainforgeError: the worker's own error (its code kept) once retries are spent.
        TrainingFailed: any other failure of the run.
    """
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = cfg.spec.resources
    per_worker: dict[str, float] = {"CPU": float(resources.cpus)}
    if resources.gpus:
        per_worker["GPU"] = float(resources.gpus)
    storage_path, filesystem = storage_for(cfg.artifacts_uri, cfg.job_id)
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"worker": cfg},
        scaling_config=ScalingConfig(num_workers=1, use_gpu=resources.gpus > 0,
                                     resources_per_worker=per_worker),
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
