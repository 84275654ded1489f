"""The KubeRay backend's API calls, against the stand-in API server in tests/fixtures/fake_kube.py.

The server validates every created RayJob as the real API server (strict CRD schema) and KubeRay
(controller rules) would; tests play the operator by writing the RayJob's status.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import pickle
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import services.dispatcher.backends.kubeapi as kubeapi
from services.dispatcher.backends.base import Backend, BackendState
from services.dispatcher.backends.kubeapi import CustomResource, KubeApi
from services.dispatcher.backends.kuberay import RAYJOBS, KubeRayBackend
from services.dispatcher.backends.kuberay_config import KubeRayConfig
from tests.fixtures.fake_kube import FakeKubeApiServer
from tests.fixtures.kube import CONFIG, NAMESPACE, RAY_RESOURCES, cluster_validator, launch_request
from trainforge.constants import ENV_KUBE_API_URL, ENV_KUBERAY_CONFIG
from trainforge.errors import (
    BackendConfigError,
    BackendError,
    KubernetesApiError,
    KubernetesNotFound,
)
from trainforge.spec import parse_spec

SPEC = parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}, "retries": 3,
                   "resources": {"gpus": 1}})
JOB_ID = "0190c1d2-aaaa-7bbb-8ccc-0123456789ab"


def _stored(server: FakeKubeApiServer, handle: str) -> Any:
    namespace, name = handle.split("/")
    return server.get_object("ray.io", "v1", namespace, "rayjobs", name)


def _set_status(server: FakeKubeApiServer, handle: str, **status: Any) -> None:
    namespace, name = handle.split("/")
    server.set_status("ray.io", "v1", namespace, "rayjobs", name, status)


def test_kuberay_backend_satisfies_the_protocol(backend: KubeRayBackend) -> None:
    runner: Backend = backend
    assert runner.name == "kuberay"


def test_launch_creates_one_rayjob_and_is_idempotent(
    backend: KubeRayBackend, kube_server: FakeKubeApiServer
) -> None:
    handle = backend.launch(launch_request(SPEC, JOB_ID))
    assert handle == f"{NAMESPACE}/tf-{JOB_ID}-1"
    stored = _stored(kube_server, handle)
    assert stored["spec"]["jobId"] == JOB_ID and stored["metadata"]["uid"]

    # A dispatcher that crashed after create and retries the launch gets the same run.
    assert backend.launch(launch_request(SPEC, JOB_ID)) == handle
    posts = [r for r in kube_server.requests if r[0] == "POST"]
    assert len(posts) == 2 and len(kube_server.objects) == 1

    # The next attempt is a new RayJob, not the finished one.
    second = backend.launch(launch_request(SPEC, JOB_ID, attempt=2))
    assert second == f"{NAMESPACE}/tf-{JOB_ID}-2" and len(kube_server.objects) == 2


def test_launch_refuses_a_name_owned_by_another_job(
    backend: KubeRayBackend, kube_server: FakeKubeApiServer
) -> None:
    handle = backend.launch(launch_request(SPEC, JOB_ID))
    namespace, name = handle.split("/")
    key = ("ray.io", "v1", namespace, "rayjobs", name)
    kube_server.objects[key]["metadata"]["annotations"]["trainforge.io/job-id"] = "other"
    with pytest.raises(BackendError, match="belongs to job 'other'"):
        backend.launch(launch_request(SPEC, JOB_ID))


def test_poll_follows_the_rayjob_status(
    backend: KubeRayBackend, kube_server: FakeKubeApiServer
) -> None:
    handle = backend.launch(launch_request(SPEC, JOB_ID))
    assert backend.poll(handle).state is BackendState.PENDING
    _set_status(kube_server, handle, jobDeploymentStatus="Running", jobStatus="RUNNING")
    assert backend.poll(handle).state is BackendState.RUNNING
    _set_status(kube_server, handle, jobDeploymentStatus="Failed", jobStatus="FAILED",
                reason="AppFailed", message="exit code 1", failed=4)
    status = backend.poll(handle)
    assert status.state is BackendState.FAILED and "exit code 1" in status.message
    _set_status(kube_server, handle, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    assert backend.poll(handle).state is BackendState.SUCCEEDED


def test_poll_of_a_missing_rayjob_is_unknown(backend: KubeRayBackend) -> None:
    assert backend.poll(f"{NAMESPACE}/tf-nope-1").state is BackendState.UNKNOWN


def test_cancel_deletes_with_background_propagation_and_tolerates_repeats(
    backend: KubeRayBackend, kube_server: FakeKubeApiServer
) -> None:
    handle = backend.launch(launch_request(SPEC, JOB_ID))
    backend.cancel(handle)
    assert _stored(kube_server, handle) is None
    deletes = [r for r in kube_server.requests if r[0] == "DELETE"]
    assert deletes[0][2]["propagationPolicy"] == "Background"
    backend.cancel(handle)  # already gone: not an error
    assert backend.poll(handle).state is BackendState.UNKNOWN


def test_logs_summarise_status_and_point_at_the_shipped_log(
    backend: KubeRayBackend, kube_server: FakeKubeApiServer
) -> None:
    handle = backend.launch(launch_request(SPEC, JOB_ID, attempt=3))
    _set_status(kube_server, handle, jobDeploymentStatus="Failed", reason="DeadlineExceeded",
                message="past activeDeadlineSeconds", rayClusterName="tf-x-abcde")
    text = backend.logs(handle)
    assert "jobDeploymentStatus: Failed" in text and "DeadlineExceeded" in text
    assert f"jobs/{JOB_ID}/attempts/3/log.txt" in text
    backend.cancel(handle)
    assert "no longer exists" in backend.logs(handle)


def test_bad_handle_is_refused(backend: KubeRayBackend) -> None:
    with pytest.raises(BackendError, match="namespace/rayjob-name"):
        backend.poll("just-a-name")


def test_wrong_token_is_reported_with_a_hint(
    kube_server: FakeKubeApiServer, kuberay_config: KubeRayConfig, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("wrong")
    backend = KubeRayBackend(kuberay_config, KubeApi(kube_server.url, token_file=token))
    with pytest.raises(KubernetesApiError, match="HTTP 401") as info:
        backend.launch(launch_request(SPEC, JOB_ID))
    assert info.value.status == 401 and "token" in info.value.message


def test_invalid_object_is_refused_with_the_servers_message(
    kube_server: FakeKubeApiServer, kube_token: Path
) -> None:
    api = KubeApi(kube_server.url, token_file=kube_token)
    body = {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": "tf-x-1", "namespace": NAMESPACE},
            "spec": {"entrypoint": "true", "backoffLimit": "two"}}
    with pytest.raises(KubernetesApiError, match="Invalid") as info:
        api.create(RAYJOBS, NAMESPACE, body)
    assert info.value.status == 422 and "backoffLimit" in info.value.message


def test_missing_crd_is_a_not_found_that_says_so(
    kube_server: FakeKubeApiServer, kube_token: Path
) -> None:
    api = KubeApi(kube_server.url, token_file=kube_token)
    with pytest.raises(KubernetesNotFound, match="is the KubeRay CRD installed"):
        api.get(CustomResource("ray.io", "v1", "rayservices"), NAMESPACE, "x")


def test_unreachable_server_is_an_api_error(kube_token: Path) -> None:
    from tests.fixtures.network import free_port

    api = KubeApi(f"http://127.0.0.1:{free_port()}", token_file=kube_token, timeout=2)
    with pytest.raises(KubernetesApiError, match="ConnectError"):
        api.get(RAYJOBS, NAMESPACE, "x")


def test_list_filters_by_label(backend: KubeRayBackend, kube_server: FakeKubeApiServer) -> None:
    backend.launch(launch_request(SPEC, JOB_ID))
    backend.launch(launch_request(SPEC, "other-job"))
    items = backend.api.list(RAYJOBS, NAMESPACE, label_selector=f"trainforge.io/job-id={JOB_ID}")
    assert [i["spec"]["jobId"] for i in items] == [JOB_ID]


def test_api_errors_survive_pickling() -> None:
    err = KubernetesNotFound("gone", 404, "NotFound")
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.message, copy.status, copy.reason) == (
        KubernetesNotFound, "gone", 404, "NotFound")


# -- in-cluster configuration: service-account token + CA over HTTPS --------------------------

@pytest.fixture()
def tls_server(tmp_path: Path) -> Iterator[tuple[FakeKubeApiServer, Path]]:
    """The stand-in server on HTTPS with a throwaway CA-signed certificate for 127.0.0.1."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-kube-ca")])
    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(hours=1)
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    server = FakeKubeApiServer(RAY_RESOURCES, token="sa-token", validator=cluster_validator,
                               ssl_context=context).start()
    try:
        yield server, tmp_path / "ca.crt"
    finally:
        server.stop()


def test_in_cluster_client_uses_the_service_account(
    tls_server: tuple[FakeKubeApiServer, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = tls_server
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    (sa_dir / "token").write_text("sa-token")
    (sa_dir / "ca.crt").write_bytes(ca.read_bytes())
    monkeypatch.setattr(kubeapi, "SERVICE_ACCOUNT_DIR", sa_dir)
    monkeypatch.delenv(ENV_KUBE_API_URL, raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", server.url.rsplit(":", 1)[1])
    config_file = tmp_path / "kuberay.json"
    import json

    config_file.write_text(json.dumps(CONFIG))
    monkeypatch.setenv(ENV_KUBERAY_CONFIG, str(config_file))

    backend = KubeRayBackend.from_env()
    assert backend.api.base_url.startswith("https://127.0.0.1:")
    handle = backend.launch(launch_request(SPEC, JOB_ID))
    assert backend.poll(handle).state is BackendState.PENDING

    # A rotated token is picked up without a restart.
    (sa_dir / "token").write_text("rotated")
    server.token = "rotated"
    assert backend.poll(handle).state is BackendState.PENDING


def test_client_refuses_a_server_its_ca_did_not_sign(
    tls_server: tuple[FakeKubeApiServer, Path], tmp_path: Path
) -> None:
    server, _ = tls_server
    api = KubeApi(server.url, ca_file=None)  # system trust store: does not know the test CA
    with pytest.raises(KubernetesApiError, match="CERTIFICATE_VERIFY_FAILED|ConnectError"):
        api.get(RAYJOBS, NAMESPACE, "x")


def test_outside_a_pod_without_a_url_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubeapi, "SERVICE_ACCOUNT_DIR", tmp_path / "absent")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv(ENV_KUBE_API_URL, raising=False)
    with pytest.raises(BackendConfigError, match=ENV_KUBE_API_URL):
        KubeApi.from_environment()


def test_missing_backend_config_says_which_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_KUBERAY_CONFIG, raising=False)
    from services.dispatcher.backends.kuberay_config import load_config

    with pytest.raises(BackendConfigError, match=ENV_KUBERAY_CONFIG):
        load_config()


def test_yaml_config_file_loads(tmp_path: Path) -> None:
    import yaml

    from services.dispatcher.backends.kuberay_config import load_config

    path = tmp_path / "kuberay.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert load_config(path).default_node_pool == "a10g"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BackendConfigError, match="not valid JSON/YAML"):
        load_config(tmp_path / "bad.json")
