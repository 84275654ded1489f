"""charts/trainforge renders objects a Kubernetes 1.30+ cluster with KubeRay would accept.

Each values set (defaults and charts/trainforge/ci/*-values.yaml) is rendered with the real helm
and every object checked: core kinds against the strict Kubernetes schemas of every release
from 1.30 (kubernetes-validate's bundled files), custom resources against the CRDs in
tests/fixtures/kubecheck/crds made strict, KubeRay's controller rules, and Pod Security
"restricted".
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml

from services.dispatcher.backends.kuberay import RayJobBuilder
from services.dispatcher.backends.kuberay_config import parse_config
from tests.fixtures.chart import (
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    by_kind,
    chart_path,
    chart_values,
    helm,
    one,
    render,
    values_args,
)
from tests.fixtures.kube import launch_request
from tests.fixtures.kubecheck.crd import crd_errors, is_custom_resource
from tests.fixtures.kubecheck.k8s import k8s_errors
from tests.fixtures.kubecheck.kuberay_rules import kuberay_errors
from tests.fixtures.kubecheck.paths import REPO
from tests.fixtures.kubecheck.pss import all_restricted_errors, pod_specs
from trainforge import constants
from trainforge.spec import parse_spec

SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                 "app.kubernetes.io/component"}


def test_helm_lint_strict(value_set: str) -> None:
    proc = helm("lint", "--strict", str(chart_path()), *values_args(value_set), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_object_is_valid_for_its_schema(rendered: list[dict[str, Any]]) -> None:
    errors: list[str] = []
    for obj in rendered:
        if is_custom_resource(obj):
            errors += crd_errors(obj) + kuberay_errors(obj)
        else:
            errors += k8s_errors(obj)
    assert errors == []


def test_every_pod_is_pod_security_restricted(rendered: list[dict[str, Any]]) -> None:
    pods = [where for obj in rendered for where, _ in pod_specs(obj)]
    assert any("Deployment" in w for w in pods) and any("Pod/" in w for w in pods)
    assert [e for obj in rendered for e in all_restricted_errors(obj)] == []


def test_names_fit_kubernetes_limits(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        if obj["kind"] == "RayCluster":
            assert len(name) <= 53  # KubeRay's limit ("-serve-svc" must still fit in 63)


def test_a_long_release_name_still_gives_valid_names() -> None:
    release = "r" + "x" * 52  # Helm allows release names up to 53 characters
    out = helm("template", release, str(chart_path()), "--namespace", NAMESPACE,
               *values_args("gpu-pools-values.yaml")).stdout
    for obj in (d for d in yaml.safe_load_all(out) if d):
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        if obj["kind"] == "RayCluster":
            assert kuberay_errors(obj) == []


def test_selectors_are_minimal_and_match_their_pods(rendered: list[dict[str, Any]]) -> None:
    for obj in by_kind(rendered, "Deployment"):
        selector = obj["spec"]["selector"]["matchLabels"]
        assert set(selector) == SELECTOR_KEYS
        labels = obj["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
        assert "app.kubernetes.io/version" not in selector  # selectors are immutable
    for svc in by_kind(rendered, "Service"):
        assert set(svc["spec"]["selector"]) == SELECTOR_KEYS
    for obj in rendered:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "trainforge"


def test_api_has_service_hpa_and_pdb_by_default() -> None:
    objs = render("default")
    deploy = one(objs, "Deployment", "-api")
    assert "replicas" not in deploy["spec"]  # the HPA owns the replica count
    hpa = one(objs, "HorizontalPodAutoscaler", "-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    pdb = one(objs, "PodDisruptionBudget", "-api")
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == 8000
    assert "command" not in container  # the image's CMD runs uvicorn --factory


def test_optional_features_are_off_by_default() -> None:
    kinds = {o["kind"] for o in render("default")}
    assert not kinds & {"RayCluster", "ServiceMonitor", "PrometheusRule"}
    config = json.loads(one(render("default"), "ConfigMap")["data"]["kuberay.json"])
    assert config["kueue"]["enabled"] is False


def test_image_tags_default_to_app_version_and_digests_win() -> None:
    app_version = yaml.safe_load(chart_path("Chart.yaml").read_text())["appVersion"]
    default = one(render("default"), "Deployment", "-api")
    assert default["spec"]["template"]["spec"]["containers"][0]["image"].endswith(
        f"trainforge-api:{app_version}")
    config = json.loads(one(render("default"), "ConfigMap")["data"]["kuberay.json"])
    assert config["image"].endswith(f"trainforge-train:{app_version}")
    pinned = one(render("production-values.yaml"), "Deployment", "-api")
    assert re.search(r"@sha256:[0-9a-f]{64}$",
                     pinned["spec"]["template"]["spec"]["containers"][0]["image"])


def test_dispatcher_runs_the_module_with_metrics_port_and_only_it_has_a_token(
    rendered: list[dict[str, Any]],
) -> None:
    dispatcher = one(rendered, "Deployment", "-dispatcher")
    pod = dispatcher["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "services.dispatcher"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TRAINFORGE_DISPATCHER_METRICS_PORT"]["value"] == "9100"
    assert container["ports"][0]["containerPort"] == 9100
    assert pod["automountServiceAccountToken"] is True
    for where, other in ((w, p) for o in rendered for w, p in pod_specs(o)):
        if "dispatcher" not in where and "headGroupSpec" not in where:
            assert other.get("automountServiceAccountToken") is False, where


def test_dispatcher_role_is_least_privilege(rendered: list[dict[str, Any]]) -> None:
    role = one(rendered, "Role")
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs", "rayclusters"],
                              "verbs": ["get", "list", "watch", "create", "delete"]}]
    binding = one(rendered, "RoleBinding")
    dispatcher = one(rendered, "Deployment", "-dispatcher")
    assert binding["subjects"] == [{
        "kind": "ServiceAccount", "namespace": NAMESPACE,
        "name": dispatcher["spec"]["template"]["spec"]["serviceAccountName"]}]
    assert by_kind(rendered, "ClusterRole") == by_kind(rendered, "ClusterRoleBinding") == []


def test_secrets_come_only_from_existing_secrets(rendered: list[dict[str, Any]]) -> None:
    assert by_kind(rendered, "Secret") == []
    sensitive = re.compile(r"DATABASE_URL|SECRET|PASSWORD|ACCESS_KEY|TOKEN")
    for obj in rendered:
        for where, pod in pod_specs(obj):
            for c in pod.get("containers", []):
                for env in c.get("env") or []:
                    if sensitive.search(env["name"]):
                        assert "secretKeyRef" in env.get("valueFrom", {}), (where, env)
    for cm in by_kind(rendered, "ConfigMap"):
        config = json.loads(cm["data"]["kuberay.json"])
        assert not any(sensitive.search(k) for k in config["env"])


def test_env_var_names_are_the_ones_trainforge_reads(rendered: list[dict[str, Any]]) -> None:
    known = {v for k, v in vars(constants).items() if k.startswith("ENV_")}
    known |= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
    names = {e["name"] for o in rendered for _, pod in pod_specs(o)
             for c in pod.get("containers", []) for e in c.get("env") or []}
    for cm in by_kind(rendered, "ConfigMap"):
        config = json.loads(cm["data"]["kuberay.json"])
        names |= set(config["env"]) | {s["name"] for s in config["secretEnv"]}
    ours = {n for n in names if n.startswith(("TRAINFORGE_", "AWS_"))}
    assert ours - known == set(), "env var names not in trainforge/constants.py"
    assert "TRAINFORGE_DATABASE_URL" in names and "TRAINFORGE_ARTIFACTS_URI" in names


def test_api_and_dispatcher_read_the_same_team_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scheduled jobs (the dispatcher) and submissions (the API) are held to one set of limits,
    read from the rendered environment as the processes read it."""
    from services.store.settings import StoreSettings

    rendered = render("production-values.yaml")
    limits = []
    for suffix in ("-api", "-dispatcher"):
        container = one(rendered, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"] if "LIMITS" in e["name"]}
        assert set(env) == {"TRAINFORGE_DEFAULT_LIMITS", "TRAINFORGE_TEAM_LIMITS"}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TRAINFORGE_SECRET_KEY", "x" * 32)  # a Secret's value, not rendered
        settings = StoreSettings()
        limits.append((settings.limits_for("vision"), settings.limits_for("robots")))
    assert limits[0] == limits[1]
    vision, other = limits[0]
    assert (vision.max_active_jobs, vision.max_gpus_per_job) == (50, 16)
    assert (other.max_active_jobs, other.max_gpus_per_job, other.max_sweep_trials) == (10, 4, 32)


def test_api_and_dispatcher_read_the_same_storage_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy in values reaches both deployables' settings; a team reads its own prefixes
    only, and other teams get the default."""
    from services.store.settings import StoreSettings
    from trainforge.errors import AccessDenied

    rendered = render("production-values.yaml")
    policies = []
    for suffix in ("-api", "-dispatcher"):
        container = one(rendered, "Deployment", suffix)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]
               if e["name"].startswith("TRAINFORGE_") and "value" in e}
        assert "TRAINFORGE_STORAGE_POLICY" in env
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("TRAINFORGE_SECRET_KEY", "x" * 32)  # a Secret's value, not rendered
        policies.append(StoreSettings().effective_storage_policy)
    assert policies[0] == policies[1]
    settings = StoreSettings()
    assert settings.access_for("vision").dataset("s3://ml-datasets/vision/ppe/") \
        == "s3://ml-datasets/vision/ppe/"
    assert settings.access_for("robots").dataset("s3://ml-datasets/shared/x/")
    with pytest.raises(AccessDenied, match="s3://ml-datasets/shared/"):
        settings.access_for("robots").dataset("s3://ml-datasets/vision/ppe/")
    with pytest.raises(AccessDenied, match="artifacts store"):
        settings.access_for("vision").dataset("s3://ml-artifacts/trainforge/jobs/")


def test_a_team_with_its_own_service_account_runs_with_only_its_identity() -> None:
    """kuberay.teamServiceAccounts: the chart creates the account with its IRSA annotation,
    and that team's RayJob pods run as it without the shared static S3 keys; other teams keep
    the release's account and keys."""
    rendered = render("production-values.yaml")
    account = one(rendered, "ServiceAccount", "-team-vision")
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/trainforge-vision"}
    assert account["automountServiceAccountToken"] is False
    config = parse_config(json.loads(one(rendered, "ConfigMap")["data"]["kuberay.json"]))
    builder = RayJobBuilder(config)
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}, "resources": {"gpus": 1}})
    for team, expected_account, static_keys in (
        ("vision", account["metadata"]["name"], False),
        ("robots", config.service_account_name, True),
    ):
        job = builder.build(launch_request(spec, "job-1", team=team))
        assert crd_errors(job) + kuberay_errors(job) + all_restricted_errors(job) == []
        cluster = job["spec"]["rayClusterSpec"]
        for template in (cluster["headGroupSpec"]["template"],
                         cluster["workerGroupSpecs"][0]["template"]):
            assert template["spec"]["serviceAccountName"] == expected_account, team
            names = {e["name"] for e in template["spec"]["containers"][0]["env"]}
            assert ("AWS_SECRET_ACCESS_KEY" in names) is static_keys, team


def test_backend_config_from_the_chart_makes_valid_rayjobs(rendered: list[dict[str, Any]]) -> None:
    """The chart and services/dispatcher/backends/kuberay_config.py agree on the config file."""
    config = parse_config(json.loads(one(rendered, "ConfigMap")["data"]["kuberay.json"]))
    assert config.namespace == NAMESPACE
    builder = RayJobBuilder(config)
    for pool in config.node_pools:
        gpus = 0 if pool == "cpu" else 1
        spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"},
                           "resources": {"gpu_type": pool, "gpus": gpus}})
        job = builder.build(launch_request(spec, "job-1", team="vision"))
        assert crd_errors(job) + kuberay_errors(job) + all_restricted_errors(job) == []
        # The RayJob's pods carry the labels the chart's NetworkPolicies select on.
        template = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]
        np = [o for o in rendered if o["kind"] == "NetworkPolicy"
              and o["metadata"]["name"].endswith("-ray")]
        for policy in np:
            wanted = policy["spec"]["podSelector"]["matchLabels"]
            assert wanted.items() <= template["metadata"]["labels"].items()


def test_ray_version_is_one_value_everywhere(rendered: list[dict[str, Any]]) -> None:
    ray_version = chart_values()["rayVersion"]
    config = json.loads(one(rendered, "ConfigMap")["data"]["kuberay.json"])
    assert config["rayVersion"] == ray_version
    for cluster in by_kind(rendered, "RayCluster"):
        assert cluster["spec"]["rayVersion"] == ray_version


def test_raycluster_head_runs_no_training_and_workers_get_gpus() -> None:
    cluster = one(render("gpu-pools-values.yaml"), "RayCluster")
    spec = cluster["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"a10g", "h100x8", "cpu"}  # the default "gpu" group was removed
    h100 = groups["h100x8"]
    assert (h100["minReplicas"], h100["maxReplicas"], h100["replicas"]) == (1, 2, 1)
    pod = h100["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "8"
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    shm = pod["volumes"][0]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "524288Mi"}  # half of 1Ti
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0][
        "resources"]["limits"]


def test_ray_backend_points_the_dispatcher_at_the_head_service() -> None:
    objs = render("ray-backend-values.yaml")
    cluster = one(objs, "RayCluster")
    env = {e["name"]: e.get("value") for e in one(objs, "Deployment", "-dispatcher")["spec"][
        "template"]["spec"]["containers"][0]["env"]}
    assert env["TRAINFORGE_DISPATCHER_BACKEND"] == "ray"
    assert env["TRAINFORGE_RAY_ADDRESS"] == (
        f"http://{cluster['metadata']['name']}-head-svc.{NAMESPACE}.svc:8265")


def test_network_policies_deny_by_default_and_open_ray_ports_narrowly(
    rendered: list[dict[str, Any]], value_set: str
) -> None:
    policies = {p["metadata"]["name"].rsplit("-", 1)[-1]: p
                for p in by_kind(rendered, "NetworkPolicy")}
    if value_set == "minimal-values.yaml":
        assert policies == {}
        return
    deny = policies["deny"]
    assert "ingress" not in deny["spec"] and deny["spec"]["policyTypes"] == ["Ingress"]
    for obj in rendered:  # every pod the chart makes is under the default deny
        if obj["kind"] in ("Deployment", "Pod"):
            labels = (obj["spec"].get("template") or obj)["metadata"]["labels"]
            assert deny["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    ray_rules = policies["ray"]["spec"]["ingress"]
    assert ray_rules[0]["from"][0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "ray"
    ported = ray_rules[1]
    assert [p["port"] for p in ported["ports"]] == [6379, 8265, 10001]
    sources = ported["from"]
    assert sources[0]["podSelector"]["matchExpressions"][0]["values"] == [
        "api", "dispatcher", "ray-submitter"]
    operator_ns = "ray-system" if value_set == "production-values.yaml" else "kuberay-system"
    assert sources[1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": operator_ns}


def test_monitoring_objects_when_enabled() -> None:
    objs = render("monitoring-values.yaml")
    monitors = by_kind(objs, "ServiceMonitor")
    services = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s
                for s in by_kind(objs, "Service")}
    for monitor in monitors:
        component = monitor["metadata"]["labels"]["app.kubernetes.io/component"]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selected = services[component]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= selected["metadata"][
            "labels"].items()
        port_names = {p["name"] for p in selected["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in port_names
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "api", "dispatcher"}


def test_prometheus_rule_renders_the_infra_rules_exactly() -> None:
    source = REPO / "infra" / "prometheus" / "rules.yaml"
    copy = chart_path("files", "prometheus-rules.yaml")
    assert copy.read_bytes() == source.read_bytes(), (
        "charts/trainforge/files/prometheus-rules.yaml differs from infra/prometheus/rules.yaml:"
        " run `make sync-rules`")
    rule = one(render("monitoring-values.yaml"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(source.read_text())


def test_helm_test_hook_calls_readyz() -> None:
    pod = one(render("default"), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    command = " ".join(pod["spec"]["containers"][0]["command"])
    assert f"http://{RELEASE}-trainforge-api.{NAMESPACE}.svc:8000/readyz" in command
    assert pod["spec"]["restartPolicy"] == "Never"


def test_notes_tell_what_must_exist_before_the_first_job() -> None:
    proc = helm("install", RELEASE, str(chart_path()), "--namespace", NAMESPACE,
                "--dry-run=client", *values_args("production-values.yaml"))
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert 'Secret "trainforge-postgres" with key "sqlalchemy-url"' in notes
    assert 'Secret "trainforge-minio"' in notes
    assert "helm test tf" in notes


def test_ci_values_sets_exist() -> None:
    assert {"gpu-pools-values.yaml", "monitoring-values.yaml", "kueue-values.yaml",
            "ray-backend-values.yaml"} <= set(VALUE_SETS)


def test_kueue_queues_reach_the_backend_config() -> None:
    config = parse_config(json.loads(one(render("kueue-values.yaml"), "ConfigMap")["data"][
        "kuberay.json"]))
    builder = RayJobBuilder(config)
    spec = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}})
    labels = builder.build(launch_request(spec, "j", team="robotics"))["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "robotics-gpu"
    labels = builder.build(launch_request(spec, "j", team="other"))["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "shared-gpu"
