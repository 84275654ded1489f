"""Deployment configuration of the KubeRay backend (rendered by the Helm chart as JSON).

The chart writes this file into a ConfigMap from the same values that shape its own RayCluster,
so node pools, image, security settings and labels agree between the two. Keys are camelCase
like the Kubernetes objects they end up in; unknown keys are refused.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from trainforge.constants import ENV_KUBERAY_CONFIG
from trainforge.errors import BackendConfigError

#: Kubernetes quantities we accept for memory (binary suffixes, as the job spec uses).
MEMORY_QUANTITY = r"^[1-9][0-9]*(Ki|Mi|Gi|Ti)$"
#: CPU quantities: whole cores or millicores.
CPU_QUANTITY = r"^([1-9][0-9]*|[1-9][0-9]*m|0\.[0-9]*[1-9])$"
_DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def is_label_value(value: str) -> bool:
    """Whether ``value`` is a valid Kubernetes label value (≤ 63 chars, alnum at both ends)."""
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid (optionally prefixed) Kubernetes label key."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return False
    return len(name) <= 63 and bool(_LABEL_NAME.match(name))


class _Config(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class Toleration(_Config):
    """A pod toleration, as in core/v1 Toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)


def _check_labels(labels: dict[str, str], what: str) -> dict[str, str]:
    for key, value in labels.items():
        if not is_label_key(key):
            raise ValueError(f"{what}: {key!r} is not a valid Kubernetes label key")
        if not is_label_value(value):
            raise ValueError(f"{what}: {key}={value!r} is not a valid Kubernetes label value")
    return labels


class NodePool(_Config):
    """Where a worker group's pods may run, and what a GPU is called there."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    gpu_resource: str = Field(
        "nvidia.com/gpu", description="extended resource name the device plugin advertises"
    )
    max_gpus_per_worker: int | None = Field(
        None,
        ge=0,
        le=64,
        description="GPUs on one node of this pool (0: a CPU pool); larger requests are refused",
    )
    shm_size: str | None = Field(
        None,
        pattern=MEMORY_QUANTITY,
        description="size of the /dev/shm memory volume; default: half of the worker memory",
    )

    @field_validator("node_selector")
    @classmethod
    def _valid_selector(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value, "nodeSelector")


class PodSize(_Config):
    """CPU and memory of a container (requests = limits, as Ray recommends)."""

    cpu: str = Field(pattern=CPU_QUANTITY)
    memory: str = Field(pattern=MEMORY_QUANTITY)


class HeadConfig(_Config):
    """The Ray head of each job's cluster: runs the job driver, never training (num-cpus 0)."""

    size: PodSize = Field(default_factory=lambda: PodSize(cpu="2", memory="8Gi"))
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)

    @field_validator("node_selector")
    @classmethod
    def _valid_selector(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value, "head.nodeSelector")


class SecretEnv(_Config):
    """An environment variable read from a key of an existing Secret."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    secret_name: str = Field(pattern=_DNS1123_LABEL)
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$")


class KueueConfig(_Config):
    """Kueue admission: the LocalQueue each team's RayJobs are labelled with."""

    enabled: bool = False
    queues: dict[str, str] = Field(default_factory=dict, description="team → LocalQueue name")
    default_queue: str | None = Field(None, description="LocalQueue for teams not listed")

    @model_validator(mode="after")
    def _names(self) -> Self:
        for name in [*self.queues.values(), *([self.default_queue] if self.default_queue else [])]:
            if not is_label_value(name):
                raise ValueError(f"kueue queue name {name!r} is not a valid label value")
        if self.enabled and not self.queues and not self.default_queue:
            raise ValueError("kueue.enabled needs queues (team → LocalQueue) or a defaultQueue")
        return self


class PodSecurity(_Config):
    """Identity the Ray containers run as (the train image's non-root user)."""

    run_as_user: int = Field(1000, ge=1)
    run_as_group: int = Field(100, ge=0)
    fs_group: int = Field(100, ge=0)


class KubeRayConfig(_Config):
    """Everything the KubeRay backend needs besides the job itself."""

    namespace: str = Field(pattern=_DNS1123_LABEL)
    image: str = Field(min_length=1, description="the train image (Dockerfile.train)")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: list[str] = Field(default_factory=list)
    ray_version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$")
    service_account_name: str | None = Field(
        None, pattern=_DNS1123_LABEL, description="for Ray pods; default: the namespace's default"
    )
    team_service_accounts: dict[str, str] = Field(
        default_factory=dict,
        description="team → service account of its Ray pods (IRSA / Workload Identity), so a "
        "team's job pods hold only that team's cloud credentials; teams not listed get "
        "serviceAccountName and the static secretEnv credentials",
    )
    node_pools: dict[str, NodePool] = Field(min_length=1, description="pool name → node pool")
    default_node_pool: str = Field(description="pool for jobs whose resources.gpu_type is unset")
    head: HeadConfig = Field(default_factory=HeadConfig)
    submitter: PodSize = Field(default_factory=lambda: PodSize(cpu="500m", memory="512Mi"))
    ttl_seconds_after_finished: int = Field(
        3600, ge=0, le=30 * 24 * 3600, description="how long a finished cluster lingers"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="added to every RayJob and pod (NetworkPolicy keys)"
    )
    env: dict[str, str] = Field(default_factory=dict, description="static env for every Ray pod")
    secret_env: list[SecretEnv] = Field(default_factory=list)
    kueue: KueueConfig = Field(default_factory=KueueConfig)
    security: PodSecurity = Field(default_factory=PodSecurity)

    @field_validator("node_pools")
    @classmethod
    def _pool_names(cls, pools: dict[str, NodePool]) -> dict[str, NodePool]:
        bad = [name for name in pools if not re.match(_DNS1123_LABEL, name) or len(name) > 30]
        if bad:
            raise ValueError(
                f"node pool names must be DNS labels of at most 30 characters: {', '.join(bad)}"
            )
        return pools

    @field_validator("labels")
    @classmethod
    def _valid_labels(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_labels(value, "labels")

    @field_validator("team_service_accounts")
    @classmethod
    def _valid_accounts(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{team}: {name}" for team, name in value.items()
               if not re.match(_DNS1123_LABEL, team) or not re.match(_DNS1123_LABEL, name)]
        if bad:
            raise ValueError(f"teams and service account names must be DNS labels: {bad}")
        return value

    def service_account_for(self, team: str) -> str | None:
        """The service account of a team's Ray pods (None: the namespace's default)."""
        return self.team_service_accounts.get(team, self.service_account_name)

    @model_validator(mode="after")
    def _default_pool_exists(self) -> Self:
        if self.default_node_pool not in self.node_pools:
            raise ValueError(
                f"defaultNodePool {self.default_node_pool!r} is not one of the nodePools "
                f"({', '.join(sorted(self.node_pools))})"
            )
        clash = sorted({s.name for s in self.secret_env} & set(self.env))
        if clash:
            raise ValueError(f"set {', '.join(clash)} either in env or in secretEnv, not both")
        return self


def parse_config(data: object, *, source: str = "<kuberay config>") -> KubeRayConfig:
    """Validate a mapping as a KubeRayConfig.

    Raises:
        BackendConfigError: one ``path: message`` line per problem.
    """
    try:
        return KubeRayConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise BackendConfigError(
            f"{source}: invalid KubeRay backend config:\n" + "\n".join(lines)
        ) from None


def load_config(path: str | Path | None = None) -> KubeRayConfig:
    """Read the config file named by ``path`` or ``TRAINFORGE_KUBERAY_CONFIG`` (JSON or YAML).

    Raises:
        BackendConfigError: no path given, file unreadable, or contents invalid.
    """
    where = path or os.environ.get(ENV_KUBERAY_CONFIG)
    if not where:
        raise BackendConfigError(
            f"the KubeRay backend needs a config file: set {ENV_KUBERAY_CONFIG} to its path "
            "(the Helm chart mounts one at /etc/trainforge/kuberay.json)"
        )
    try:
        text = Path(where).read_text()
    except OSError as exc:
        raise BackendConfigError(f"cannot read KubeRay config {where}: {exc}") from None
    try:
        data = json.loads(text) if str(where).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise BackendConfigError(f"{where}: not valid JSON/YAML: {exc}") from None
    return parse_config(data, source=str(where))
