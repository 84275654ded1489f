"""The job's Ray cluster: join the one given (the embedded server's warm head, a Ray
cluster, KubeRay), or start a private local one; size a spec to a local machine; where Ray
Train/Tune keep their run state. Every job kind connects through here.
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
from trainforge import layout
from trainforge.constants import (
    ENV_LOCAL_RAY,
    ENV_RAY_ADDRESS,
    ENV_RAY_TRAIN_PREEMPTION_WATCHER,
    ENV_S3_ENDPOINT_URL,
)
from trainforge.errors import ClusterUnavailable, ResourcesUnavailable
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
            # Logical CPUs: at least one per worker, however few cores the machine has.
            ray.init(address="local", include_dashboard=False,
                     num_cpus=max(os.cpu_count() or 1, resources.cpus * resources.workers),
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
    local = not address or server_head
    if local:
        # Ray Train's preemption watcher looks for nodes being drained (spot instances): one
        # machine has none. Without it a run starts one process fewer, and its log loses the
        # warning Ray's core worker prints about the watcher's restart arguments.
        os.environ.setdefault(ENV_RAY_TRAIN_PREEMPTION_WATCHER, "0")
    return Cluster(f"{where} ({gpus} GPUs, {cpus} CPUs)", gpus, cpus, local=local)


def fit_to_cluster(spec: JobSpec, cluster: Cluster, reporter: JobReporter) -> JobSpec:
    """The spec to run on ``cluster``: on a local Ray (a laptop, a CPU-only box running
    ``trainforge serve``) the job uses what this machine has and says so in its events;
    elsewhere it is the spec as is (a cluster's own scheduler, and the KubeRay backend's node
    pools, decide there).

    Locally, each worker's CPUs shrink to the machine's share; with fewer GPUs than workers
    the job trains on the CPU (no GPU at all: as many CPU workers), or on as many one-GPU
    workers as there are GPUs (``train.batch`` stays the global batch). A sweep's trials drop
    their GPUs (``sweep.gpus_per_trial``) on a machine without one.

    Raises:
        ResourcesUnavailable: the machine has fewer CPUs than the job has workers, or than
            one data-parallel sweep trial needs.
    """
    if not cluster.local:
        return spec
    res = spec.resources
    if res.workers > cluster.cpus > 0:
        raise ResourcesUnavailable(
            f"resources.workers={res.workers}, but this machine's Ray has {cluster.cpus} CPUs: "
            "each worker needs one at least; ask for fewer workers")
    if spec.sweep is not None and \
            spec.sweep.cpus_per_trial * spec.sweep.workers_per_trial > cluster.cpus > 0:
        raise ResourcesUnavailable(
            f"a trial needs sweep.workers_per_trial × cpus_per_trial = "
            f"{spec.sweep.workers_per_trial} × {spec.sweep.cpus_per_trial:g} CPUs, but this "
            f"machine's Ray has {cluster.cpus}; ask for fewer workers or CPUs per trial")
    cpus = min(res.cpus, max(1, cluster.cpus // res.workers)) if cluster.cpus else res.cpus
    if cpus != res.cpus:
        # Workers asking for more CPUs than the machine's Ray has would wait forever.
        log.info("resources.cpus=%d per worker, this machine's Ray has %d for %d worker(s): "
                 "each takes %d", res.cpus, cluster.cpus, res.workers, cpus)
        res = res.model_copy(update={"cpus": cpus})
    per_trial = spec.sweep.gpus_per_trial if spec.sweep is not None else 0.0
    update: dict[str, Any] = {"resources": res}
    if res.total_gpus > cluster.gpus or (per_trial > 0 and cluster.gpus == 0):
        workers = min(res.workers, cluster.gpus) if cluster.gpus else res.workers
        res = res.model_copy(update={"workers": workers,
                                     "gpus_per_worker": 1 if cluster.gpus else 0})
        update["resources"] = res
        if spec.sweep is not None and cluster.gpus == 0:
            update["sweep"] = spec.sweep.model_copy(update={"gpus_per_trial": 0.0})
        asked = spec.resources
        on = f"{res.workers} worker(s) with one GPU each" if cluster.gpus else \
            f"the CPU ({res.workers} worker(s))"
        reporter.notice(
            f"the spec asks for {asked.workers} worker(s) with {asked.gpus_per_worker} GPU each"
            + (f" (sweep.gpus_per_trial={per_trial:g})" if spec.sweep is not None else "")
            + f" but this machine has {cluster.gpus} GPU(s): training on {on} instead (only a "
            "job on a local Ray adapts to its machine; on a cluster ask for what its nodes "
            "have)",
            requested_gpus=asked.total_gpus, gpus=res.total_gpus, workers=res.workers,
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
