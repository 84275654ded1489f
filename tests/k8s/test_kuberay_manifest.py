"""Every RayJob the KubeRay backend generates is one KubeRay would accept and run.

Generated from job specs (hypothesis over trainforge.spec JobSpec/Resources), each manifest must
pass the RayJob CRD schema made strict, KubeRay's controller-side rules, the Kubernetes 1.30+
PodTemplate schema for every embedded pod, and Pod Security "restricted".
"""

from __future__ import annotations

import copy
import dataclasses
import re
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.dispatcher.backends.base import BackendState, LaunchRequest
from services.dispatcher.backends.kuberay import (
    KUEUE_QUEUE_LABEL,
    MAX_RAYJOB_NAME,
    RayJobBuilder,
    rayjob_name,
    status_from_rayjob,
)
from services.dispatcher.backends.kuberay_config import KubeRayConfig, parse_config
from tests.fixtures.kube import CONFIG, launch_request
from tests.fixtures.kubecheck.crd import crd_errors
from tests.fixtures.kubecheck.k8s import k8s_errors
from tests.fixtures.kubecheck.kuberay_rules import kuberay_errors
from tests.fixtures.kubecheck.pss import all_restricted_errors, pod_specs
from trainforge.errors import BackendConfigError, ResourcesUnavailable
from trainforge.spec import JobKind, JobSpec, parse_spec

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
POOL_MAX_GPUS = {"a10g": 4, "h100": 8, "cpu": 0}

job_ids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    st.text("0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=26, max_size=26),  # ULIDs
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,120}", fullmatch=True),
)
teams = st.one_of(st.sampled_from(["vision", "robotics", "Research_Lab"]),
                  st.from_regex(r"[a-z][a-z0-9-]{0,70}", fullmatch=True))


@st.composite
def job_specs(draw: st.DrawFn) -> JobSpec:
    """Valid JobSpecs whose resources fit one of the configured node pools."""
    gpu_type = draw(st.sampled_from([None, "a10g", "h100", "cpu"]))
    pool = gpu_type or "a10g"
    max_gpus = POOL_MAX_GPUS[pool]
    resources: dict[str, Any] = draw(st.one_of(
        # The older form: N GPUs, read as N one-GPU workers (or one worker on the CPU).
        st.builds(lambda gpus: {"gpus": gpus}, st.integers(0, max_gpus)),
        st.builds(lambda workers, gpw: {"workers": workers, "gpus_per_worker": gpw},
                  st.integers(1, 64), st.integers(0, min(1, max_gpus))),
    ))
    resources |= {
        "cpus": draw(st.integers(1, 256)),
        "memory": f"{draw(st.integers(1, 4096))}{draw(st.sampled_from(['Mi', 'Gi', 'Ti']))}",
    }
    if gpu_type is not None:
        resources["gpu_type"] = gpu_type
    kind = draw(st.sampled_from(list(JobKind)))
    data: dict[str, Any] = {
        "kind": kind.value,
        "name": "detector",
        "dataset": {"uri": "s3://datasets/ppe/v3/"},
        "train": {"batch": 64},  # one image per worker at least
        "resources": resources,
        "retries": draw(st.integers(0, 10)),
        "timeout_minutes": draw(st.integers(1, 7 * 24 * 60)),
    }
    if kind is JobKind.SWEEP:
        data["sweep"] = {"space": {"lr0": {"loguniform": [1e-4, 1e-1]}}}
    if kind is JobKind.EXPORT:
        data["export"] = {"formats": ["onnx"]}
        data["model"] = {"base": "s3://models/detector/1/best.pt"}
    return parse_spec(data)


def manifest_errors(obj: dict[str, Any], *, all_versions: bool = False) -> list[str]:
    errors = crd_errors(obj) + kuberay_errors(obj) + all_restricted_errors(obj)
    for where, pod in pod_specs(obj):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                   "template": {"spec": pod}}
        errors += [f"{where}: {e}" for e in k8s_errors(wrapped, endpoints_only=not all_versions)]
    return errors


@pytest.fixture(scope="module")
def builder() -> RayJobBuilder:
    return RayJobBuilder(parse_config(CONFIG))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=job_specs(), job_id=job_ids, team=teams, attempt=st.integers(1, 10_000))
def test_every_generated_rayjob_is_valid(
    spec: JobSpec, job_id: str, team: str, attempt: int
) -> None:
    builder = RayJobBuilder(parse_config(CONFIG))
    request = launch_request(spec, job_id, team, attempt)
    obj = builder.build(request)
    assert manifest_errors(obj) == []

    name = obj["metadata"]["name"]
    assert len(name) <= MAX_RAYJOB_NAME and _DNS1035.match(name)
    job = obj["spec"]
    assert job["jobId"] == job_id
    assert job["submissionMode"] == "K8sJobMode"
    assert job["shutdownAfterJobFinishes"] is True
    assert job["backoffLimit"] == spec.retries
    assert job["activeDeadlineSeconds"] == spec.timeout_minutes * 60
    assert job["ttlSecondsAfterFinished"] == 3600

    cluster = job["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    [group] = cluster["workerGroupSpecs"]
    pool = spec.resources.gpu_type or "a10g"
    assert group["groupName"] == pool
    workers = spec.resources.workers
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == workers
    worker_pod = group["template"]["spec"]
    limits = worker_pod["containers"][0]["resources"]["limits"]
    assert limits["cpu"] == str(spec.resources.cpus)
    assert limits["memory"] == spec.resources.memory
    if spec.resources.gpus_per_worker:
        assert limits["nvidia.com/gpu"] == "1"
    else:
        assert "nvidia.com/gpu" not in limits
    assert worker_pod.get("nodeSelector", {}) == CONFIG["nodePools"][pool].get("nodeSelector", {})
    assert worker_pod.get("tolerations", []) == CONFIG["nodePools"][pool].get("tolerations", [])
    [shm] = worker_pod["volumes"]
    assert shm["emptyDir"]["medium"] == "Memory"
    queue = obj["metadata"]["labels"][KUEUE_QUEUE_LABEL]
    assert queue == ("vision-queue" if team == "vision" else "shared-queue")


def test_three_workers_are_three_one_gpu_pods_of_one_fixed_group(builder: RayJobBuilder) -> None:
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}, "train": {"batch": 48},
                       "resources": {"workers": 3, "gpus_per_worker": 1, "gpu_type": "h100",
                                     "cpus": 12, "memory": "64Gi"}})
    obj = builder.build(launch_request(spec, "j-3"))
    assert manifest_errors(obj, all_versions=True) == []
    cluster = obj["spec"]["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is False  # Kueue admits all three pods or none
    [group] = cluster["workerGroupSpecs"]
    assert (group["groupName"], group["replicas"], group["minReplicas"],
            group["maxReplicas"]) == ("h100", 3, 3, 3)
    [container] = group["template"]["spec"]["containers"]
    assert container["resources"]["requests"] == container["resources"]["limits"] == {
        "cpu": "12", "memory": "64Gi", "nvidia.com/gpu": "1"}


def test_generated_rayjob_valid_for_every_kubernetes_release(builder: RayJobBuilder) -> None:
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"},
                       "resources": {"gpus": 8, "gpu_type": "h100"}})
    assert manifest_errors(builder.build(launch_request(spec, "j-1")), all_versions=True) == []


@settings(max_examples=200, deadline=None)
@given(a=job_ids, b=job_ids, attempt=st.integers(1, 10_000))
def test_rayjob_names_are_stable_short_and_distinct(a: str, b: str, attempt: int) -> None:
    name = rayjob_name(a, attempt)
    assert name == rayjob_name(a, attempt)
    assert len(name) <= MAX_RAYJOB_NAME and _DNS1035.match(name)
    if a != b:
        assert rayjob_name(b, attempt) != name
    assert rayjob_name(a, attempt + 1) != name


def test_a_dns_safe_job_id_is_kept_verbatim() -> None:
    job_id = str(uuid.UUID(int=7))
    assert rayjob_name(job_id, 2) == f"tf-{job_id}-2"


def test_entrypoint_is_the_shared_command_line(builder: RayJobBuilder) -> None:
    spec = parse_spec({"kind": "train", "name": "d", "dataset": {"uri": "s3://d/"}})
    request = launch_request(spec, "0190c1d2-aaaa-7bbb-8ccc-0123456789ab")
    obj = builder.build(request)
    assert obj["spec"]["entrypoint"] == " ".join(request.command)
    assert obj["spec"]["entrypoint"].startswith("python -m jobs.train --spec s3://artifacts/jobs/")


def test_a_uri_with_shell_metacharacters_is_quoted(builder: RayJobBuilder) -> None:
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}})
    request = launch_request(spec, "j1")
    request = dataclasses.replace(request, spec_uri="s3://a/x;rm -rf /")
    assert obj_entrypoint(builder, request).endswith("--spec 's3://a/x;rm -rf /'")


def obj_entrypoint(builder: RayJobBuilder, request: LaunchRequest) -> str:
    return str(builder.build(request)["spec"]["entrypoint"])


def test_credentials_come_from_the_secret_never_as_plain_text(builder: RayJobBuilder) -> None:
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}})
    env = {"AWS_SECRET_ACCESS_KEY": "plain-text-secret", "TRAINFORGE_JOB_TOKEN": "tok"}
    obj = builder.build(launch_request(spec, "j1", env=env))
    assert "plain-text-secret" not in repr(obj)
    for _, pod in pod_specs(obj):
        for container in pod["containers"]:
            if container["name"] == "ray-job-submitter":
                assert "env" not in container  # the submitter only runs `ray job submit`
                continue
            by_name = {e["name"]: e for e in container["env"]}
            assert by_name["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
                "name": "trainforge-s3", "key": "secret-access-key"}
            assert by_name["TRAINFORGE_JOB_TOKEN"]["value"] == "tok"
            assert by_name["TRAINFORGE_ARTIFACTS_URI"]["value"] == "s3://artifacts"


def test_unknown_gpu_type_is_refused_naming_the_pools(builder: RayJobBuilder) -> None:
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"},
                       "resources": {"gpu_type": "t4"}})
    with pytest.raises(ResourcesUnavailable, match="a10g, cpu, h100"):
        builder.build(launch_request(spec, "j1"))


def test_an_older_spec_with_more_gpus_than_a_node_has_spreads_over_nodes(
    builder: RayJobBuilder,
) -> None:
    """``gpus: 5`` used to be refused on 4-GPU nodes (one worker held them all); it is now
    five one-GPU workers, which Kubernetes places on two nodes or more."""
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"},
                       "resources": {"gpus": 5, "gpu_type": "a10g"}})
    obj = builder.build(launch_request(spec, "j1"))
    assert manifest_errors(obj) == []
    [group] = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == 5
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_gpus_on_a_cpu_pool_are_refused(builder: RayJobBuilder) -> None:
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"},
                       "resources": {"gpus": 1, "gpu_type": "cpu"}})
    with pytest.raises(ResourcesUnavailable, match="pool 'cpu' have 0 GPUs"):
        builder.build(launch_request(spec, "j1"))


def test_kueue_team_without_queue_and_no_default_is_a_config_error() -> None:
    config = copy.deepcopy(CONFIG)
    config["kueue"] = {"enabled": True, "queues": {"vision": "vision-queue"}}
    builder = RayJobBuilder(parse_config(config))
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}})
    assert builder.build(launch_request(spec, "j1", team="vision"))["metadata"]["labels"][
        KUEUE_QUEUE_LABEL] == "vision-queue"
    with pytest.raises(BackendConfigError, match="team 'robotics' has no Kueue LocalQueue"):
        builder.build(launch_request(spec, "j1", team="robotics"))


def test_no_kueue_label_when_kueue_is_off() -> None:
    config = {**CONFIG, "kueue": {"enabled": False}}
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}})
    obj = RayJobBuilder(parse_config(config)).build(launch_request(spec, "j1"))
    assert KUEUE_QUEUE_LABEL not in obj["metadata"]["labels"]
    assert manifest_errors(obj) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"defaultNodePool": "v100"}, "defaultNodePool 'v100' is not one of the nodePools"),
        ({"nodePools": {}}, "nodePools"),
        ({"nodePools": {"A10G": {}}, "defaultNodePool": "A10G"}, "DNS labels"),
        ({"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
        ({"nodePool": {}}, "nodePool: Extra inputs are not permitted"),
        ({"env": {"AWS_ACCESS_KEY_ID": "x"}}, "either in env or in secretEnv"),
        ({"labels": {"bad key!": "x"}}, "not a valid Kubernetes label key"),
        ({"kueue": {"enabled": True}}, "needs queues"),
    ],
)
def test_bad_backend_config_is_refused_with_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(BackendConfigError, match=re.escape(message)):
        parse_config({**CONFIG, **change})


# -- the checks themselves must be able to fail -----------------------------------------------

def _valid(builder: RayJobBuilder) -> dict[str, Any]:
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}})
    return builder.build(launch_request(spec, "j1"))


def test_checks_catch_an_unknown_field(builder: RayJobBuilder) -> None:
    obj = _valid(builder)
    obj["spec"]["shutdownAfterJobFinish"] = True  # typo: pruned silently by a real API server
    assert any("shutdownAfterJobFinish" in e for e in crd_errors(obj))


def test_checks_catch_kuberay_controller_rules(builder: RayJobBuilder) -> None:
    obj = _valid(builder)
    obj["metadata"]["name"] = "tf-" + "x" * 50
    obj["spec"]["shutdownAfterJobFinishes"] = False
    errors = kuberay_errors(obj)
    assert any("longer than 47" in e for e in errors)
    assert any("ttlSecondsAfterFinished > 0 needs shutdownAfterJobFinishes" in e for e in errors)


def test_checks_catch_a_pod_that_is_not_restricted(builder: RayJobBuilder) -> None:
    obj = _valid(builder)
    worker = obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    del worker["containers"][0]["securityContext"]["allowPrivilegeEscalation"]
    worker["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    del obj["spec"]["submitterPodTemplate"]
    errors = all_restricted_errors(obj)
    assert any("allowPrivilegeEscalation" in e for e in errors)
    assert any("hostPath" in e for e in errors)
    assert any("submitter (KubeRay default)" in e for e in errors)


def test_checks_catch_an_invalid_pod_field(builder: RayJobBuilder) -> None:
    obj = _valid(builder)
    obj["spec"]["submitterPodTemplate"]["spec"]["restartPolicy"] = "Sometimes"
    assert any("restartPolicy" in e for e in manifest_errors(obj))


# -- status mapping -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("status", "state"),
    [
        ({}, BackendState.PENDING),
        ({"jobDeploymentStatus": "Initializing"}, BackendState.PENDING),
        ({"jobDeploymentStatus": "Suspended"}, BackendState.PENDING),
        ({"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}, BackendState.PENDING),
        ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, BackendState.RUNNING),
        ({"jobDeploymentStatus": "Retrying", "failed": 1}, BackendState.RUNNING),
        # a failed attempt that KubeRay will retry is not final yet
        ({"jobDeploymentStatus": "Running", "jobStatus": "FAILED"}, BackendState.PENDING),
        ({"jobDeploymentStatus": "Running", "jobStatus": "SUCCEEDED"}, BackendState.SUCCEEDED),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, BackendState.SUCCEEDED),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, BackendState.STOPPED),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "FAILED"}, BackendState.FAILED),
        ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"},
         BackendState.FAILED),
        ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, BackendState.FAILED),
        ({"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed",
          "message": "bad"}, BackendState.FAILED),
    ],
)
def test_status_mapping(status: dict[str, Any], state: BackendState) -> None:
    assert status_from_rayjob({"status": status}).state is state


def test_failure_message_carries_kuberay_reason() -> None:
    result = status_from_rayjob({"status": {"jobDeploymentStatus": "Failed",
                                            "reason": "DeadlineExceeded",
                                            "message": "past activeDeadlineSeconds"}})
    assert result.message == "DeadlineExceeded: past activeDeadlineSeconds"


def test_config_model_roundtrips_camel_case(kuberay_config: KubeRayConfig) -> None:
    dumped = kuberay_config.model_dump(by_alias=True, exclude_none=True)
    assert parse_config(dumped) == kuberay_config
    assert "nodePools" in dumped and "defaultNodePool" in dumped
