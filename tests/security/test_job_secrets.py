"""Jobs get only what they need: no dispatcher secrets, and their token never in job settings
that others can read (a Ray job's runtime_env, a RayJob object)."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from services.dispatcher.backends.base import BackendState, BackendStatus, LaunchRequest
from services.dispatcher.backends.kuberay import RayJobBuilder
from services.dispatcher.backends.kuberay_config import parse_config
from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.dispatcher import Dispatcher, DispatcherConfig
from services.store import Database, creation
from services.store.domain import NewJob
from services.store.ids import new_job_id
from services.store.tokens import job_token
from tests.fixtures.jobstore import open_access
from tests.fixtures.kube import CONFIG
from trainforge.reporting import JobReporter
from trainforge.spec import JobKind, Resources
from trainforge.storage import open_location

ROOT = Path(__file__).resolve().parents[2]
SECRET = b"job-secrets-test-key-0123456789abcdef"
#: What a dispatcher process holds that no job may see.
DISPATCHER_SECRETS = {
    "TRAINFORGE_SECRET_KEY": "the-api-hmac-key",
    "TRAINFORGE_DATABASE_URL": "postgresql://trainforge:hunter2@db/trainforge",
    "TRAINFORGE_TOKEN": "tf_0123456789abcdef_someteamtoken",
    "TRAINFORGE_STORAGE_POLICY": '{"teams": {"vision": {"datasets": ["s3://vision-only/"]}}}',
    "TRAINFORGE_TEAM_LIMITS": '{"vision": {"max_active_jobs": 50}}',
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
    "UNRELATED_SERVICE_PASSWORD": "pw",
}


def test_a_local_job_inherits_none_of_the_dispatchers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in DISPATCHER_SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the-same-users-key")  # S3 access stays
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    dump = tmp_path / "env.json"
    backend = LocalBackend(tmp_path / "state", module="tests.security.env_dump")
    request = LaunchRequest(
        job_id="j-env", kind=JobKind.TRAIN, spec_uri=str(dump), attempt=1,
        resources=Resources(gpus=0, cpus=1), retries=0, timeout_s=300, team="vision",
        env={"TRAINFORGE_JOB_ID": "j-env", "TRAINFORGE_JOB_TEAM": "vision"},
        secrets={"TRAINFORGE_JOB_TOKEN": "tfj_this-attempt"},
    )
    handle = backend.launch(request)
    deadline = time.monotonic() + 60
    while backend.poll(handle).state is not BackendState.SUCCEEDED:
        assert time.monotonic() < deadline, backend.logs(handle)
        time.sleep(0.1)
    seen = json.loads(dump.read_text())
    leaked = sorted(set(DISPATCHER_SECRETS) & set(seen))
    assert leaked == [], leaked
    assert seen["TRAINFORGE_JOB_TOKEN"] == "tfj_this-attempt"  # its own, privately
    assert seen["TRAINFORGE_JOB_TEAM"] == "vision" and seen["AWS_ACCESS_KEY_ID"]
    assert seen["PATH"] == os.environ["PATH"]


class SharedSettingsBackend:
    """Records launches like a backend whose job settings others can read (Ray Jobs API,
    KubeRay): ``private_env`` is False, so the dispatcher must not put secrets in them."""

    name = "shared-settings"
    private_env = False

    def __init__(self) -> None:
        self.requests: list[LaunchRequest] = []
        self.done: set[str] = set()

    def launch(self, request: LaunchRequest) -> str:
        self.requests.append(request)
        return request.job_id

    def poll(self, handle: str) -> BackendStatus:
        state = BackendState.SUCCEEDED if handle in self.done else BackendState.RUNNING
        return BackendStatus(state)

    def cancel(self, handle: str) -> None:
        pass

    def logs(self, handle: str) -> str:
        return ""


def test_shared_settings_carry_no_secret_and_the_token_goes_through_the_store(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, f"dispatcher-{name.lower()}")
    artifacts = tmp_path / "artifacts"
    body = json.dumps({"name": "ppe", "dataset": {"uri": "s3://datasets/ppe/"}}).encode()
    job_id = new_job_id()
    spec = artifacts / "jobs" / job_id / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_bytes(body)
    with db.transaction() as session:
        creation.insert_job(session, NewJob(
            id=job_id, team="vision", kind=JobKind.TRAIN, name="ppe",
            spec_uri=f"file://{spec}", spec_sha256=hashlib.sha256(body).hexdigest(), gpus=1,
            max_attempts=1))
    backend = SharedSettingsBackend()
    config = DispatcherConfig(api_url="http://127.0.0.1:9", secret_key=SECRET,
                              artifacts_uri=f"file://{artifacts}",
                              models_uri=f"file://{tmp_path}/models", access_for=open_access)
    dispatcher = Dispatcher(db, backend, config)  # type: ignore[arg-type]
    try:
        dispatcher.run_once()
        (request,) = backend.requests
        token = job_token(SECRET, job_id, 1)
        settings = json.dumps(request.env)
        assert token not in settings and "TRAINFORGE_JOB_TOKEN" not in request.env
        assert request.secrets == {}
        assert "dispatcher-" not in settings, "the dispatcher's own credentials travelled"
        # RayJob objects built from the request hold no token either.
        rayjob = json.dumps(RayJobBuilder(parse_config(CONFIG)).build(request))
        assert token not in rayjob and "dispatcher-" not in rayjob
        # The job finds its token where the dispatcher stored it.
        secrets_uri = request.env["TRAINFORGE_JOB_SECRETS_URI"]
        assert f"/internal/attempts/{job_id}/1/" in secrets_uri
        for name, value in request.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("TRAINFORGE_JOB_TOKEN", raising=False)
        reporter = JobReporter.from_env()
        assert reporter._headers == {"Authorization": f"Bearer {token}"}
        # The attempt ends: its stored secrets go.
        backend.done.add(job_id)
        dispatcher.run_once()
    finally:
        dispatcher.close()
    store, key = open_location(secrets_uri)
    assert not store.exists(key)
