"""KubeRay's controller-side validation, which no CRD schema expresses.

Re-implemented from ray-operator/controllers/ray/utils/validation.go (KubeRay v1.7.0):
the operator marks an object that breaks one of these ``ValidationFailed`` after it was accepted
by the API server, so a schema-valid RayJob can still never run.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_RAYCLUSTER_NAME = 53  # 63 - len("-serve-svc")
MAX_RAYJOB_NAME = MAX_RAYCLUSTER_NAME - 6  # KubeRay appends "-xxxxx" for the cluster
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")


def _name_errors(kind: str, name: str, limit: int) -> list[str]:
    errors = []
    if len(name) > limit:
        errors.append(f"{kind} name {name!r} is longer than {limit} characters")
    if not _DNS1035.match(name) or len(name) > 63:
        errors.append(f"{kind} name {name!r} is not a DNS-1035 label")
    return errors


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e.get("name"): e.get("value") for e in container.get("env") or []}


def _group_errors(group: str, spec: dict[str, Any]) -> list[str]:
    errors = []
    containers = (spec.get("template") or {}).get("spec", {}).get("containers") or []
    if not containers:
        errors.append(f"{group}: the pod template has no container")
    elif not containers[0].get("image"):
        errors.append(f"{group}: the Ray container (index 0) has no image")
    params = spec.get("rayStartParams") or {}
    if any(params.get(k) for k in _RAY_START_RESOURCES) and spec.get("resources"):
        errors.append(f"{group}: resources set both in rayStartParams and in resources")
    if "labels" in params:
        errors.append(f"{group}: rayStartParams['labels'] is not supported; use labels")
    for key, value in (spec.get("labels") or {}).items():
        prefix, _, name = key.rpartition("/")
        if not _LABEL_NAME.match(name) or len(name) > 63 or len(prefix) > 253:
            errors.append(f"{group}: invalid label key {key!r}")
        if not _LABEL_VALUE.match(value) or len(value) > 63:
            errors.append(f"{group}: invalid label value {key}={value!r}")
    return errors


def raycluster_spec_errors(spec: dict[str, Any], annotations: dict[str, str]) -> list[str]:
    """ValidateRayClusterSpec."""
    errors = []
    head = spec.get("headGroupSpec") or {}
    errors += _group_errors("headGroupSpec", head)
    groups = spec.get("workerGroupSpecs") or []
    names = [g.get("groupName") for g in groups]
    if len(set(names)) != len(names):
        errors.append(f"worker group names repeat: {names}")
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    for group in groups:
        where = f"workerGroupSpecs[{group.get('groupName')}]"
        errors += _group_errors(where, group)
        lo, hi, n = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
        if lo is not None and hi is not None and lo > hi:
            errors.append(f"{where}: minReplicas {lo} > maxReplicas {hi}")
        if n is not None and lo is not None and hi is not None and not lo <= n <= hi:
            errors.append(f"{where}: replicas {n} outside [minReplicas, maxReplicas]")
        if group.get("suspend"):
            errors.append(f"{where}: suspending a worker group needs the RayJobDeletionPolicy "
                          "feature gate" + (" and no autoscaler" if autoscaling else ""))
    head_containers = (head.get("template") or {}).get("spec", {}).get("containers") or [{}]
    env = _env(head_containers[0])
    ft = bool(spec.get("gcsFaultToleranceOptions")) or annotations.get(
        "ray.io/ft-enabled", ""
    ).lower() == "true"
    if annotations.get("ray.io/ft-enabled") and spec.get("gcsFaultToleranceOptions"):
        errors.append("ray.io/ft-enabled annotation and gcsFaultToleranceOptions both set")
    if not ft and "RAY_REDIS_ADDRESS" in env:
        errors.append("RAY_REDIS_ADDRESS set without gcsFaultToleranceOptions")
    if (head.get("rayStartParams") or {}).get("redis-username") or "REDIS_USERNAME" in env:
        errors.append("redis username must go in gcsFaultToleranceOptions")
    if not autoscaling and str(env.get("RAY_enable_autoscaler_v2", "")) in ("1", "true"):
        errors.append("RAY_enable_autoscaler_v2 set while enableInTreeAutoscaling is false")
    return errors


def raycluster_errors(obj: dict[str, Any]) -> list[str]:
    """ValidateRayClusterMetadata + ValidateRayClusterSpec for a RayCluster object."""
    meta = obj.get("metadata") or {}
    errors = _name_errors("RayCluster", meta.get("name", ""), MAX_RAYCLUSTER_NAME)
    errors += raycluster_spec_errors(obj.get("spec") or {}, meta.get("annotations") or {})
    return errors


def rayjob_errors(obj: dict[str, Any]) -> list[str]:
    """ValidateRayJobMetadata + ValidateRayJobSpec for a RayJob object."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    errors = _name_errors("RayJob", meta.get("name", ""), MAX_RAYJOB_NAME)
    mode = spec.get("submissionMode", "K8sJobMode")
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    selector = spec.get("clusterSelector") or {}
    if mode not in SUBMISSION_MODES:
        errors.append(f"submissionMode {mode!r} is not one of {sorted(SUBMISSION_MODES)}")
    if spec.get("suspend") and not shutdown:
        errors.append("suspend: true needs shutdownAfterJobFinishes: true")
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    if ttl < 0:
        errors.append("ttlSecondsAfterFinished must be >= 0")
    if ttl > 0 and not shutdown:
        errors.append("ttlSecondsAfterFinished > 0 needs shutdownAfterJobFinishes: true")
    if spec.get("deletionStrategy"):
        errors.append("deletionStrategy needs the RayJobDeletionPolicy feature gate")
    if selector and spec.get("suspend"):
        errors.append("clusterSelector cannot be suspended")
    if not spec.get("rayClusterSpec") and not selector:
        errors.append("one of rayClusterSpec or clusterSelector must be set")
    if selector and not selector.get("ray.io/cluster"):
        errors.append("clusterSelector needs ray.io/cluster")
    if selector and mode == "SidecarMode":
        errors.append("clusterSelector is not supported in SidecarMode")
    backoff = spec.get("backoffLimit")
    if backoff is not None:
        if backoff < 0:
            errors.append("backoffLimit must be >= 0")
        if backoff > 0 and mode == "InteractiveMode":
            errors.append("backoffLimit is incompatible with InteractiveMode")
        if backoff > 0 and selector:
            errors.append("backoffLimit is incompatible with clusterSelector")
    if mode == "SidecarMode" and (spec.get("submitterPodTemplate") or spec.get("submitterConfig")):
        errors.append("SidecarMode supports neither submitterPodTemplate nor submitterConfig")
    if mode == "K8sJobMode" and spec.get("submitterPodTemplate"):
        tpl = spec["submitterPodTemplate"].get("spec") or {}
        if not tpl.get("containers"):
            errors.append("submitterPodTemplate has no container")
        if tpl.get("restartPolicy") not in ("Never", "OnFailure"):
            errors.append("submitterPodTemplate.restartPolicy must be Never or OnFailure "
                          "(it becomes a batch/v1 Job)")
    try:
        yaml.safe_load(spec.get("runtimeEnvYAML") or "")
    except yaml.YAMLError as exc:
        errors.append(f"runtimeEnvYAML is not YAML: {exc}")
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline <= 0:
        errors.append("activeDeadlineSeconds must be > 0")
    if spec.get("rayClusterSpec"):
        errors += raycluster_spec_errors(spec["rayClusterSpec"], meta.get("annotations") or {})
    return errors


def kuberay_errors(obj: dict[str, Any]) -> list[str]:
    """Controller-side errors of a RayJob or RayCluster (empty list for other kinds)."""
    if obj.get("kind") == "RayJob":
        return rayjob_errors(obj)
    if obj.get("kind") == "RayCluster":
        return raycluster_errors(obj)
    return []
