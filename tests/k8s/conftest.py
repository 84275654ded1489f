"""Fixtures for the KubeRay backend: a backend config and a stand-in Kubernetes API server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.dispatcher.backends.base import LaunchRequest
from services.dispatcher.backends.kubeapi import KubeApi
from services.dispatcher.backends.kuberay import KubeRayBackend
from services.dispatcher.backends.kuberay_config import KubeRayConfig, parse_config
from tests.k8s.fake_kube import FakeKubeApiServer
from tests.kubecheck.crd import crd_errors
from tests.kubecheck.kuberay_rules import kuberay_errors
from trainforge.spec import JobSpec

NAMESPACE = "trainforge-jobs"
RAY_RESOURCES = {("ray.io", "v1", "rayjobs"), ("ray.io", "v1", "rayclusters")}

CONFIG: dict[str, Any] = {
    "namespace": NAMESPACE,
    "image": "registry.example.com/trainforge-train:0.1.0",
    "rayVersion": "2.60.0",
    "nodePools": {
        "a10g": {
            "nodeSelector": {"node.kubernetes.io/instance-type": "g5.2xlarge"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}],
            "maxGpusPerWorker": 4,
        },
        "h100": {
            "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                             "effect": "NoSchedule"}],
            "maxGpusPerWorker": 8,
            "shmSize": "64Gi",
        },
        "cpu": {"maxGpusPerWorker": 0},
    },
    "defaultNodePool": "a10g",
    "labels": {"app.kubernetes.io/part-of": "trainforge", "app.kubernetes.io/instance": "tf"},
    "env": {"TRAINFORGE_ARTIFACTS_URI": "s3://artifacts", "TRAINFORGE_MODELS_URI": "s3://models"},
    "secretEnv": [
        {"name": "AWS_ACCESS_KEY_ID", "secretName": "trainforge-s3", "key": "access-key-id"},
        {"name": "AWS_SECRET_ACCESS_KEY", "secretName": "trainforge-s3",
         "key": "secret-access-key"},
    ],
    "kueue": {"enabled": True, "queues": {"vision": "vision-queue"},
              "defaultQueue": "shared-queue"},
}


def launch_request(spec: JobSpec, job_id: str, team: str = "vision", attempt: int = 1,
                   env: dict[str, str] | None = None) -> LaunchRequest:
    return LaunchRequest(
        job_id=job_id,
        kind=spec.kind,
        spec_uri=f"s3://artifacts/jobs/{job_id}/spec.json",
        attempt=attempt,
        resources=spec.resources,
        retries=spec.retries,
        timeout_minutes=spec.timeout_minutes,
        team=team,
        env=env if env is not None else {"TRAINFORGE_JOB_ID": job_id},
    )


@pytest.fixture()
def kuberay_config() -> KubeRayConfig:
    return parse_config(CONFIG)


def cluster_validator(obj: dict[str, Any]) -> list[str]:
    """What the API server (strict CRD schema), then KubeRay's validation, would refuse."""
    return crd_errors(obj) or kuberay_errors(obj)


@pytest.fixture()
def kube_server() -> Iterator[FakeKubeApiServer]:
    """The stand-in API server on loopback (see tests/k8s/fake_kube.py for what it fakes)."""
    server = FakeKubeApiServer(RAY_RESOURCES, token="s3cr3t", validator=cluster_validator)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def kube_token(tmp_path: Any) -> Any:
    path = tmp_path / "token"
    path.write_text("s3cr3t\n")
    return path


@pytest.fixture()
def backend(
    kube_server: FakeKubeApiServer, kuberay_config: KubeRayConfig, kube_token: Any
) -> Iterator[KubeRayBackend]:
    api = KubeApi(kube_server.url, token_file=kube_token)
    try:
        yield KubeRayBackend(kuberay_config, api)
    finally:
        api.close()
