"""KubeRay backend: one RayJob (with its own short-lived RayCluster) per job attempt.

The RayJob runs the same entrypoint as every other backend (``python -m jobs.<kind> --spec
URI``) as a Ray job driver on the head pod; each training worker (a data-parallel rank with
``gpus_per_worker`` GPUs, ``cpus`` and ``memory``, as ``trainforge.spec.Resources`` defines
it) is one pod of a fixed-size worker group (``replicas = resources.workers``) on the node pool
that ``resources.gpu_type`` names. KubeRay submits it from a small Kubernetes Job
(``K8sJobMode``), deletes the cluster when the job ends (``shutdownAfterJobFinishes``), retries
it ``backoffLimit`` times on a fresh cluster, and fails it after ``activeDeadlineSeconds``.

Logs: the Role the chart grants the dispatcher has no ``pods/log``, so :meth:`KubeRayBackend.logs`
returns the RayJob's status summary and where the job's own log is shipped
(``jobs/<id>/attempts/<n>/log.txt`` in the artifacts store, by trainforge.joblog.ship_log).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
from typing import Any

from services.dispatcher.backends.base import BackendState, BackendStatus, LaunchRequest
from services.dispatcher.backends.kubeapi import CustomResource, KubeApi
from services.dispatcher.backends.kuberay_config import (
    KubeRayConfig,
    NodePool,
    is_label_value,
    load_config,
)
from trainforge.errors import (
    BackendConfigError,
    BackendError,
    KubernetesAlreadyExists,
    KubernetesNotFound,
    ResourcesUnavailable,
)
from trainforge.layout import attempt_log_key

logger = logging.getLogger(__name__)

RAYJOBS = CustomResource("ray.io", "v1", "rayjobs")
#: KubeRay appends 6 characters to a RayJob's name for its RayCluster, whose name must leave
#: room for "-serve-svc" within 63: 63 - 10 - 6 = 47 (ray-operator utils/constant.go).
MAX_RAYJOB_NAME = 47
NAME_PREFIX = "tf-"
ANNOTATION_JOB_ID = "trainforge.io/job-id"
ANNOTATION_ATTEMPT = "trainforge.io/attempt"
ANNOTATION_TEAM = "trainforge.io/team"
LABEL_JOB_ID = "trainforge.io/job-id"
LABEL_TEAM = "trainforge.io/team"
LABEL_COMPONENT = "app.kubernetes.io/component"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
SHM_VOLUME = "dshm"

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def rayjob_name(job_id: str, attempt: int) -> str:
    """The RayJob name of one attempt of a job: ``tf-<job id>-<attempt>``, ≤ 47 chars, DNS-1035.

    Ids that are already lowercase DNS labels and short enough are kept verbatim, so operators
    can find a job's RayJob by eye; any other id is shortened and given a hash of the original,
    so two different ids never share a name.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, got {attempt}")
    suffix = f"-{attempt}"
    budget = MAX_RAYJOB_NAME - len(NAME_PREFIX) - len(suffix)
    slug = re.sub(r"[^a-z0-9]+", "-", job_id.lower()).strip("-")
    if slug == job_id and 0 < len(slug) <= budget:
        core = slug
    else:
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
        head = slug[: budget - len(digest) - 1].rstrip("-")
        core = f"{head}-{digest}" if head else digest
    name = f"{NAME_PREFIX}{core}{suffix}"
    if len(name) > MAX_RAYJOB_NAME or not _DNS1035.match(name):  # pragma: no cover - invariant
        raise AssertionError(f"generated RayJob name {name!r} is not a short DNS-1035 label")
    return name


def _memory_mib(quantity: str) -> int:
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti)", quantity)
    if match is None:
        raise ValueError(f"not a binary memory quantity: {quantity!r}")
    scale = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}[match.group(2)]
    return max(1, int(int(match.group(1)) * scale))


def _shm_size(memory: str, configured: str | None) -> str:
    """``/dev/shm`` counts against the container's memory limit, so default to half of it."""
    return configured or f"{max(64, _memory_mib(memory) // 2)}Mi"


def _container_security() -> dict[str, Any]:
    # Pod Security Standard "restricted": no escalation, no capabilities, default seccomp.
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


class RayJobBuilder:
    """Turns a LaunchRequest into a RayJob manifest under one KubeRayConfig."""

    def __init__(self, config: KubeRayConfig) -> None:
        self.config = config

    # -- public ----------------------------------------------------------------------------

    def node_pool(self, request: LaunchRequest) -> tuple[str, NodePool]:
        """The node pool a job's training worker goes to.

        Raises:
            ResourcesUnavailable: unknown gpu_type, or more GPUs per worker than a node has.
        """
        resources = request.resources
        name = resources.gpu_type or self.config.default_node_pool
        pool = self.config.node_pools.get(name)
        if pool is None:
            raise ResourcesUnavailable(
                f"resources.gpu_type {name!r} is not a node pool of this cluster; "
                f"use one of: {', '.join(sorted(self.config.node_pools))}"
            )
        if pool.max_gpus_per_worker is not None and \
                resources.gpus_per_worker > pool.max_gpus_per_worker:
            raise ResourcesUnavailable(
                f"resources.gpus_per_worker={resources.gpus_per_worker}, but nodes of pool "
                f"{name!r} have {pool.max_gpus_per_worker} GPUs; ask for "
                f"gpus_per_worker: {pool.max_gpus_per_worker} or a gpu_type with GPUs"
            )
        return name, pool

    def queue_name(self, team: str) -> str | None:
        """The Kueue LocalQueue for a team, or None when Kueue is off.

        Raises:
            BackendConfigError: Kueue is on but the team has no queue and there is no default.
        """
        kueue = self.config.kueue
        if not kueue.enabled:
            return None
        queue = kueue.queues.get(team, kueue.default_queue)
        if queue is None:
            raise BackendConfigError(
                f"team {team!r} has no Kueue LocalQueue: add it to kueue.queues in the KubeRay "
                "backend config (Helm value kuberay.kueue.queues) or set kueue.defaultQueue"
            )
        return queue

    def build(self, request: LaunchRequest) -> dict[str, Any]:
        """The RayJob manifest for one attempt of a job.

        Raises:
            ResourcesUnavailable: see :meth:`node_pool`.
            BackendConfigError: see :meth:`queue_name`.
        """
        pool_name, pool = self.node_pool(request)
        queue = self.queue_name(request.team)
        cfg = self.config
        name = rayjob_name(request.job_id, request.attempt)
        labels = dict(cfg.labels)
        labels["app.kubernetes.io/created-by"] = "trainforge-dispatcher"
        if is_label_value(request.job_id):
            labels[LABEL_JOB_ID] = request.job_id
        if is_label_value(request.team):
            labels[LABEL_TEAM] = request.team
        if queue is not None:
            labels[KUEUE_QUEUE_LABEL] = queue
        # One pod per training worker (a data-parallel rank with its GPU, CPUs and memory);
        # a fixed group size, so Kueue admits the whole job or none of it.
        workers = request.resources.workers
        return {
            "apiVersion": "ray.io/v1",
            "kind": "RayJob",
            "metadata": {
                "name": name,
                "namespace": cfg.namespace,
                "labels": labels,
                "annotations": {
                    ANNOTATION_JOB_ID: request.job_id,
                    ANNOTATION_ATTEMPT: str(request.attempt),
                    ANNOTATION_TEAM: request.team,
                },
            },
            "spec": {
                # shlex.join equals " ".join(command) for every URI the API generates, and
                # keeps a URI with shell metacharacters from being interpreted: KubeRay's
                # submitter runs "ray job submit ... -- <entrypoint>" through a shell.
                "entrypoint": shlex.join(request.command),
                "jobId": request.job_id,
                "submissionMode": "K8sJobMode",
                "shutdownAfterJobFinishes": True,
                "ttlSecondsAfterFinished": cfg.ttl_seconds_after_finished,
                "activeDeadlineSeconds": request.timeout_s,
                "backoffLimit": request.retries,
                "rayClusterSpec": {
                    "rayVersion": cfg.ray_version,
                    # Fixed-size clusters: Kueue cannot admit autoscaling RayJobs, and a
                    # training job knows its worker count up front.
                    "enableInTreeAutoscaling": False,
                    "headGroupSpec": {
                        # The head runs the job driver only; num-cpus 0 keeps Ray from
                        # scheduling training tasks on it.
                        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                        "template": self._head_template(request),
                    },
                    "workerGroupSpecs": [
                        {
                            "groupName": pool_name,
                            "replicas": workers,
                            "minReplicas": workers,
                            "maxReplicas": workers,
                            "rayStartParams": {},
                            "template": self._worker_template(request, pool),
                        }
                    ],
                },
                "submitterPodTemplate": self._submitter_template(),
            },
        }

    # -- pod templates ---------------------------------------------------------------------

    def _pod_labels(self, component: str) -> dict[str, str]:
        return {**self.config.labels, LABEL_COMPONENT: component}

    def _pod_spec(self, containers: list[dict[str, Any]], team: str | None = None,
                  **extra: Any) -> dict[str, Any]:
        sec = self.config.security
        spec: dict[str, Any] = {
            # Ray pods never call the Kubernetes API (no autoscaler in a fixed-size cluster).
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": sec.run_as_user,
                "runAsGroup": sec.run_as_group,
                "fsGroup": sec.fs_group,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": containers,
            **extra,
        }
        account = (self.config.service_account_for(team) if team is not None
                   else self.config.service_account_name)
        if account:
            spec["serviceAccountName"] = account
        if self.config.image_pull_secrets:
            spec["imagePullSecrets"] = [{"name": n} for n in self.config.image_pull_secrets]
        return spec

    def _env(self, request: LaunchRequest) -> list[dict[str, Any]]:
        # A team with a service account of its own gets its cloud credentials from it, never
        # the shared static ones.
        own_identity = request.team in self.config.team_service_accounts
        secret_env = [s for s in self.config.secret_env
                      if not (own_identity and s.name.startswith("AWS_"))]
        from_secret = {s.name for s in secret_env}
        merged = {**self.config.env, **request.env}
        skipped = sorted(from_secret & set(request.env))
        if skipped:
            # Credentials come from the Secret, never as plain text inside the RayJob object.
            logger.debug("taking %s from Secrets, not from the launch env", ", ".join(skipped))
        env: list[dict[str, Any]] = [
            {"name": k, "value": v} for k, v in sorted(merged.items()) if k not in from_secret
        ]
        env += [
            {
                "name": s.name,
                "valueFrom": {"secretKeyRef": {"name": s.secret_name, "key": s.key}},
            }
            for s in secret_env
        ]
        return env

    def _ray_container(
        self, name: str, request: LaunchRequest, cpu: str, memory: str, gpus: dict[str, str]
    ) -> dict[str, Any]:
        amounts = {"cpu": cpu, "memory": memory, **gpus}
        return {
            "name": name,
            "image": self.config.image,
            "imagePullPolicy": self.config.image_pull_policy,
            "env": self._env(request),
            # Requests = limits: Ray sizes itself from the limits, and a Guaranteed pod is
            # the last to be evicted under node memory pressure.
            "resources": {"requests": dict(amounts), "limits": dict(amounts)},
            "securityContext": _container_security(),
            "volumeMounts": [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}],
        }

    @staticmethod
    def _shm_volume(size: str) -> dict[str, Any]:
        # PyTorch data loaders pass batches through shared memory; the container runtime's
        # default 64 MiB /dev/shm makes them crash with "bus error".
        return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": size}}

    def _head_template(self, request: LaunchRequest) -> dict[str, Any]:
        head = self.config.head
        container = self._ray_container(
            "ray-head", request, head.size.cpu, head.size.memory, gpus={}
        )
        extra: dict[str, Any] = {"volumes": [self._shm_volume(_shm_size(head.size.memory, None))]}
        if head.node_selector:
            extra["nodeSelector"] = dict(head.node_selector)
        if head.tolerations:
            extra["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True)
                                    for t in head.tolerations]
        return {
            "metadata": {"labels": self._pod_labels("ray")},
            "spec": self._pod_spec([container], team=request.team, **extra),
        }

    def _worker_template(self, request: LaunchRequest, pool: NodePool) -> dict[str, Any]:
        res = request.resources
        gpus = {pool.gpu_resource: str(res.gpus_per_worker)} if res.gpus_per_worker else {}
        container = self._ray_container("ray-worker", request, str(res.cpus), res.memory, gpus)
        shm = _shm_size(res.memory, pool.shm_size)
        extra: dict[str, Any] = {"volumes": [self._shm_volume(shm)]}
        if pool.node_selector:
            extra["nodeSelector"] = dict(pool.node_selector)
        if pool.tolerations:
            extra["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True)
                                    for t in pool.tolerations]
        return {
            "metadata": {"labels": self._pod_labels("ray")},
            "spec": self._pod_spec([container], team=request.team, **extra),
        }

    def _submitter_template(self) -> dict[str, Any]:
        size = self.config.submitter
        amounts = {"cpu": size.cpu, "memory": size.memory}
        container = {
            # No command: KubeRay fills in "ray job submit ..." for the first container.
            "name": "ray-job-submitter",
            "image": self.config.image,
            "imagePullPolicy": self.config.image_pull_policy,
            "resources": {"requests": dict(amounts), "limits": dict(amounts)},
            "securityContext": _container_security(),
        }
        return {
            "metadata": {"labels": self._pod_labels("ray-submitter")},
            "spec": self._pod_spec([container], restartPolicy="Never"),
        }


def status_from_rayjob(obj: dict[str, Any]) -> BackendStatus:
    """Map a RayJob's ``status`` (jobDeploymentStatus + Ray jobStatus) to a BackendStatus."""
    status = obj.get("status") or {}
    deployment = str(status.get("jobDeploymentStatus") or "")
    job = str(status.get("jobStatus") or "")
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    detail = ": ".join(p for p in (reason, message) if p)
    if job == "SUCCEEDED":
        # Terminal success is final even while KubeRay is still tearing the cluster down.
        return BackendStatus(BackendState.SUCCEEDED, detail)
    if deployment == "Complete":
        if job == "STOPPED":
            return BackendStatus(BackendState.STOPPED, detail or "the Ray job was stopped")
        return BackendStatus(BackendState.FAILED, detail or f"Ray job ended {job or 'unknown'}")
    if deployment in ("Failed", "ValidationFailed"):
        return BackendStatus(BackendState.FAILED, detail or f"RayJob {deployment}")
    if deployment in ("Suspended", "Suspending"):
        return BackendStatus(BackendState.PENDING, "suspended: waiting for Kueue admission")
    if deployment == "Retrying":
        failed = status.get("failed", 0)
        return BackendStatus(
            BackendState.RUNNING, f"KubeRay is retrying on a new cluster after {failed} failure(s)"
        )
    if deployment == "Running":
        if job == "RUNNING":
            return BackendStatus(BackendState.RUNNING, message)
        return BackendStatus(BackendState.PENDING, f"Ray job {job or 'not yet submitted'}")
    if deployment in ("", "New", "Initializing", "Waiting"):
        return BackendStatus(BackendState.PENDING, f"RayJob {deployment or 'created'}")
    return BackendStatus(BackendState.PENDING, f"unrecognised jobDeploymentStatus {deployment!r}")


def parse_handle(handle: str) -> tuple[str, str]:
    """``namespace/name`` → (namespace, name).

    Raises:
        BackendError: the handle does not have that shape.
    """
    namespace, sep, name = handle.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise BackendError(f"not a KubeRay handle (want namespace/rayjob-name): {handle!r}")
    return namespace, name


class KubeRayBackend:
    """The Backend protocol on KubeRay: launch = create a RayJob, cancel = delete it."""

    name = "kuberay"
    private_env = False  # the RayJob object is readable in the namespace

    def __init__(self, config: KubeRayConfig, api: KubeApi) -> None:
        self.config = config
        self.api = api
        self.builder = RayJobBuilder(config)

    @classmethod
    def from_env(cls) -> KubeRayBackend:
        """Config from ``TRAINFORGE_KUBERAY_CONFIG``, API server from the pod's service account.

        Raises:
            BackendConfigError: no config, an invalid one, or no reachable API server settings.
        """
        return cls(load_config(), KubeApi.from_environment())

    def launch(self, request: LaunchRequest) -> str:
        """Create the attempt's RayJob; an existing one for the same job counts as launched.

        Returns:
            The handle ``namespace/rayjob-name``.

        Raises:
            ResourcesUnavailable: the job asks for a pool or GPU count the cluster lacks.
            BackendError: the API server refused, or the name belongs to another job.
        """
        body = self.builder.build(request)
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        handle = f"{namespace}/{name}"
        try:
            self.api.create(RAYJOBS, namespace, body)
        except KubernetesAlreadyExists:
            existing = self.api.get(RAYJOBS, namespace, name)
            owner = (existing.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_JOB_ID)
            if owner != request.job_id:
                raise BackendError(
                    f"RayJob {handle} exists but belongs to job {owner!r}, not "
                    f"{request.job_id!r}; delete it or check for a job-id clash"
                ) from None
            logger.info("RayJob %s already exists; launch is a no-op", handle)
            return handle
        logger.info(
            "created RayJob %s for job %s attempt %d (%d worker(s), %d GPU(s) on pool %s)",
            handle, request.job_id, request.attempt, request.resources.workers,
            request.resources.total_gpus,
            body["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"],
        )
        return handle

    def poll(self, handle: str) -> BackendStatus:
        """The run's state; UNKNOWN once the RayJob is gone (cancelled or past its TTL)."""
        namespace, name = parse_handle(handle)
        try:
            obj = self.api.get(RAYJOBS, namespace, name)
        except KubernetesNotFound:
            return BackendStatus(BackendState.UNKNOWN, f"RayJob {handle} not found")
        return status_from_rayjob(obj)

    def cancel(self, handle: str) -> None:
        """Delete the RayJob; KubeRay's owner references take its cluster and submitter too."""
        namespace, name = parse_handle(handle)
        try:
            self.api.delete(RAYJOBS, namespace, name, propagation_policy="Background")
        except KubernetesNotFound:
            logger.info("RayJob %s already gone; nothing to cancel", handle)
            return
        logger.info("deleted RayJob %s", handle)

    def logs(self, handle: str) -> str:
        """Best effort: the RayJob's status lines and where the job's full log lives.

        The dispatcher's Role has no ``pods/log`` (least privilege), and the driver log is
        shipped to the artifacts store by the job itself, so that is where to read it.
        """
        namespace, name = parse_handle(handle)
        try:
            obj = self.api.get(RAYJOBS, namespace, name)
        except KubernetesNotFound:
            return (
                f"RayJob {handle} no longer exists (cancelled, or deleted "
                f"{self.config.ttl_seconds_after_finished}s after it finished); "
                "the job log is in the artifacts store under jobs/<id>/attempts/<n>/log.txt\n"
            )
        annotations = obj.get("metadata", {}).get("annotations") or {}
        status = obj.get("status") or {}
        lines = [f"RayJob {handle}"]
        for key in ("jobDeploymentStatus", "jobStatus", "reason", "message", "startTime",
                    "endTime", "rayClusterName", "dashboardURL", "failed", "succeeded"):
            if status.get(key) not in (None, ""):
                lines.append(f"  {key}: {status[key]}")
        job_id, attempt = annotations.get(ANNOTATION_JOB_ID), annotations.get(ANNOTATION_ATTEMPT)
        if job_id and attempt and attempt.isdigit():
            lines.append(f"job log: <artifacts>/{attempt_log_key(job_id, int(attempt))}")
        return "\n".join(lines) + "\n"
