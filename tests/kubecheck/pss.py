"""Pod Security Standard "restricted" (Kubernetes 1.30+), plus "every container sets resources".

Implements the checks of the restricted profile (which includes baseline) on pod specs wherever
they occur: workloads' pod templates, Pods, and the pod templates inside RayCluster and RayJob
objects, including the autoscaler sidecar KubeRay injects and the submitter Job it creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
ALLOWED_ADD_CAPS = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


def _ray_cluster_pods(where: str, spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    head = (spec.get("headGroupSpec") or {}).get("template", {}).get("spec") or {}
    if spec.get("enableInTreeAutoscaling"):
        # KubeRay injects an autoscaler container into the head pod, configured only through
        # autoscalerOptions: check it as part of the head pod.
        opts = spec.get("autoscalerOptions") or {}
        head = {**head, "containers": [*head.get("containers", []), {
            "name": "autoscaler (injected by KubeRay)",
            "securityContext": opts.get("securityContext"),
            "resources": opts.get("resources"),
        }]}
    yield f"{where}.headGroupSpec", head
    for group in spec.get("workerGroupSpecs") or []:
        yield (f"{where}.workerGroupSpecs[{group.get('groupName')}]",
               (group.get("template") or {}).get("spec") or {})


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod spec an object makes (directly or through an operator), with where it is."""
    kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
    where = f"{kind}/{name}"
    spec = obj.get("spec") or {}
    if kind in _WORKLOADS:
        yield where, spec["template"]["spec"]
    elif kind == "CronJob":
        yield where, spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "Pod":
        yield where, spec
    elif kind == "RayCluster":
        yield from _ray_cluster_pods(where, spec)
    elif kind == "RayJob":
        if spec.get("rayClusterSpec"):
            yield from _ray_cluster_pods(where, spec["rayClusterSpec"])
        mode = spec.get("submissionMode", "K8sJobMode")
        if mode == "K8sJobMode":
            template = spec.get("submitterPodTemplate")
            if template is None:
                # KubeRay's default submitter pod sets no securityContext at all.
                default = {"containers": [{"name": "submitter"}]}
                yield f"{where}.submitter (KubeRay default)", default
            else:
                yield f"{where}.submitterPodTemplate", template.get("spec") or {}


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def restricted_errors(where: str, pod: dict[str, Any]) -> list[str]:
    """Violations of PSS "restricted" (and of "resources requested and limited")."""
    errors = []
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            errors.append(f"{where}: {flag} is forbidden")
    psc = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            errors.append(f"{where}: volume {volume.get('name')} of type {sorted(kinds)} is "
                          "forbidden (hostPath and other non-ephemeral types)")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            errors.append(f"{where}: sysctl {sysctl.get('name')} is not in the safe set")
    if psc.get("runAsUser") == 0:
        errors.append(f"{where}: pod runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        errors.append(f"{where}: pod seccompProfile {pod_seccomp}")
    if ((psc.get("windowsOptions") or {}).get("hostProcess")):
        errors.append(f"{where}: hostProcess is forbidden")
    if ((psc.get("seLinuxOptions") or {}).get("type") or "container_t") not in (
            "container_t", "container_init_t", "container_kvm_t", "container_engine_t"):
        errors.append(f"{where}: pod seLinuxOptions.type not allowed")
    for c in _containers(pod):
        cw = f"{where}.{c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            errors.append(f"{cw}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{cw}: allowPrivilegeEscalation must be false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            errors.append(f"{cw}: capabilities must drop ALL")
        extra = set(caps.get("add") or []) - ALLOWED_ADD_CAPS
        if extra:
            errors.append(f"{cw}: capabilities.add {sorted(extra)} not allowed")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            errors.append(f"{cw}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            errors.append(f"{cw}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            errors.append(f"{cw}: seccompProfile must be RuntimeDefault (pod or container)")
        if sc.get("procMount") not in (None, "Default"):
            errors.append(f"{cw}: procMount must be Default")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            errors.append(f"{cw}: hostProcess is forbidden")
        if ((sc.get("appArmorProfile") or {}).get("type")) == "Unconfined":
            errors.append(f"{cw}: appArmorProfile Unconfined")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                errors.append(f"{cw}: hostPort {port['hostPort']} is forbidden")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(res.get(part) or {})
            if missing:
                errors.append(f"{cw}: resources.{part} lacks {', '.join(sorted(missing))}")
    return errors


def all_restricted_errors(obj: dict[str, Any]) -> list[str]:
    """Restricted-profile violations of every pod spec ``obj`` makes."""
    return [e for where, pod in pod_specs(obj) for e in restricted_errors(where, pod)]
