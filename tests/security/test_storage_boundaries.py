"""Tenant boundaries for data, end to end: a team reads only what the storage policy allows.

Two teams share one dataset bucket on the loopback S3 server by prefix (``vision/``,
``retail/``); trainforge's artifacts and models live in another bucket. Every cross-team or
out-of-policy read is refused at each entry, at submission, at schedule create/update and at
each fire, at dataset validation, and inside the job (a spec.json changed behind the API's
back), and the S3 server's own request log shows nothing was read from the refused location.
Each test also has a positive control that does read, so the log check can fail.

The API runs under uvicorn on a loopback port (a real server), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from services.api import create_app
from services.api.settings import ApiSettings
from services.dispatcher.backends.base import BackendState, BackendStatus, LaunchRequest
from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.dispatcher import Dispatcher, DispatcherConfig
from services.dispatcher.job_env import inherited_env
from services.store import Database, tokens
from services.store import jobs as repo
from tests.fixtures.network import serve_app
from trainforge import registry
from trainforge.access import StoragePolicy, TeamAccess, team_models_uri
from trainforge.datasets import synth
from trainforge.storage import S3Store, open_location
from trainforge.storage.factory import clear_store_cache

ROOT = Path(__file__).resolve().parents[2]
SECRET = "boundaries-test-secret-key-0123456789"


@dataclass
class World:
    """The server, the two teams' tokens, and where everything lives."""

    url: str
    settings: ApiSettings
    data: str  # the shared dataset bucket
    stores: str  # the bucket of trainforge's artifacts and models
    tokens: dict[str, dict[str, str]]  # team → Authorization header

    def dataset(self, team: str, name: str = "ds") -> str:
        return f"s3://{self.data}/{team}/{name}/"

    def spec(self, dataset: str, **extra: Any) -> dict[str, Any]:
        return {"name": "ppe", "dataset": {"uri": dataset}, "model": {"base": "yolov8n.yaml"},
                "train": {"epochs": 1, "imgsz": 64}, "resources": {"gpus": 0, "cpus": 1},
                "retries": 0, **extra}

    def post(self, team: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=self.tokens[team], timeout=60)


def _upload_dataset(tmp_path: Path, bucket: str, prefix: str) -> None:
    local = synth(tmp_path / prefix.replace("/", "-"), classes=2, train=4, val=2, test=2,
                  imgsz=64, seed=1)
    store = S3Store(bucket, endpoint_url=os.environ["TRAINFORGE_S3_ENDPOINT_URL"])
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.upload(path, f"{prefix}{path.relative_to(local).as_posix()}")


@pytest.fixture()
def world(db: Database, database_url: str, s3_server: str,
          tmp_path: Path) -> Iterator[World]:
    s3 = boto3.client("s3", endpoint_url=s3_server)
    data, stores = f"data-{uuid.uuid4().hex[:10]}", f"tf-{uuid.uuid4().hex[:10]}"
    for bucket in (data, stores):
        s3.create_bucket(Bucket=bucket)
    clear_store_cache()
    for team in ("vision", "retail"):
        _upload_dataset(tmp_path, data, f"{team}/ds/")
    _upload_dataset(tmp_path, data, "shared/ds/")
    policy = StoragePolicy(teams={
        "vision": TeamAccess(datasets=(f"s3://{data}/vision/",),
                             weights=(f"s3://{data}/vision/weights/",)),
        "retail": TeamAccess(datasets=(f"s3://{data}/retail/", f"s3://{data}/shared/")),
    })
    settings = ApiSettings(
        home=tmp_path / "home", embedded=False, database_url=database_url,
        artifacts_uri=f"s3://{stores}/artifacts", models_uri=f"s3://{stores}/models",
        s3_endpoint_url=s3_server, secret_key=SECRET, migrate_on_startup=False,
        storage_policy=policy, token_cache_s=0,
    )
    with db.transaction() as session:
        headers = {team: {"Authorization": f"Bearer {tokens.create_token(session, team)[1]}"}
                   for team in ("vision", "retail")}
    with serve_app(create_app(settings)) as url:
        yield World(url, settings, data, stores, headers)


def reads_under(requests: list[str], bucket: str, prefix: str) -> list[str]:
    """The recorded requests that read (GET/HEAD, listings included) under bucket/prefix."""
    hits = []
    for line in requests:
        method, _, path = line.partition(" ")
        if method not in ("GET", "HEAD"):
            continue
        name, _, rest = path.partition("/")
        key, _, query = rest.partition("?")
        listed = [v for k, _, v in (p.partition("=") for p in query.split("&"))
                  if k == "prefix"]
        if name.split("?")[0] == bucket and (key.startswith(prefix)
                                            or any(v.startswith(prefix) for v in listed)):
            hits.append(line)
    return hits


def test_a_team_cannot_submit_another_teams_data_or_trainforges_stores(
    world: World, s3_requests: Callable[[], list[str]],
) -> None:
    d, s = world.data, world.stores
    refused = {
        f"s3://{d}/vision/ds/": 403,
        f"s3://{d}/retail/../vision/ds/": 422,
        f"s3://{d}/retail/%2e%2e/vision/ds/": 422,
        f"s3://{d}/retail//vision/ds/": 422,
        f"s3://{d.upper()}/retail/ds/": 422,
        f"s3://{d}/retail-old/ds/": 403,
        f"s3://{s}/artifacts/jobs/": 403,
        f"s3://{s}/": 403,
        "file:///etc/": 403,
        "/etc/": 403,
        f"s3://{d}/retail/ds/\u0000": 422,
    }
    for uri, status in refused.items():
        response = world.post("retail", "/v1/jobs", {"spec": world.spec(uri)})
        assert response.status_code == status, (uri, response.text)
        detail = response.json()["detail"]
        assert f"s3://{d}/vision/" not in detail.replace(uri, ""), detail
    weights = {
        f"s3://{d}/vision/weights/best.pt": 403,
        f"s3://{s}/models/vision/ppe/j1/best.pt": 403,
        "/root/.trainforge/models/vision/ppe/j1/best.pt": 403,
        "registry://../vision/ppe@j1": 422,
    }
    for base, status in weights.items():
        spec = world.spec(world.dataset("retail"), model={"base": base})
        response = world.post("retail", "/v1/jobs", {"spec": spec})
        assert response.status_code == status, (base, response.text)
    assert reads_under(s3_requests(), d, "vision/") == []
    assert reads_under(s3_requests(), s, "models/") == []
    # Positive control: the team's own data is accepted (and submitting reads nothing).
    own = world.post("retail", "/v1/jobs", {"spec": world.spec(world.dataset("retail"))})
    assert own.status_code == 201, own.text


def test_dataset_validation_reads_only_what_the_team_may_read(
    world: World, s3_requests: Callable[[], list[str]],
) -> None:
    for uri in (world.dataset("vision"), f"s3://{world.data}/retail/../vision/ds/",
                f"s3://{world.stores}/artifacts/"):
        response = world.post("retail", "/v1/datasets/validate", {"uri": uri})
        assert response.status_code in (403, 422), response.text
        if response.status_code == 403:
            assert f"allowed prefixes: s3://{world.data}/retail/" in response.json()["detail"] \
                or "trainforge's own" in response.json()["detail"]
    assert reads_under(s3_requests(), world.data, "vision/") == []
    assert reads_under(s3_requests(), world.stores, "") == []
    # Positive control: the owner validates it, and the log shows the reads.
    ok = world.post("vision", "/v1/datasets/validate", {"uri": world.dataset("vision")})
    assert ok.status_code == 200 and ok.json()["ok"] is True, ok.text
    assert reads_under(s3_requests(), world.data, "vision/") != []


def test_schedules_are_checked_at_create_update_and_every_fire(
    world: World, db: Database, s3_requests: Callable[[], list[str]],
    tmp_path: Path,
) -> None:
    create = {"cron": "0 3 * * *", "timezone": "UTC", "only_if_dataset_changed": True}
    refused = world.post("retail", "/v1/schedules",
                         {**create, "spec": world.spec(world.dataset("vision"))})
    assert refused.status_code == 403, refused.text
    shared = world.post("retail", "/v1/schedules",
                        {**create, "spec": world.spec(f"s3://{world.data}/shared/ds/")})
    own = world.post("retail", "/v1/schedules",
                     {**create, "spec": world.spec(world.dataset("retail"))})
    assert shared.status_code == 201 and own.status_code == 201, shared.text + own.text
    patched = httpx.patch(f"{world.url}/v1/schedules/{own.json()['id']}",
                          json={"spec": world.spec(world.dataset("vision"))},
                          headers=world.tokens["retail"], timeout=30)
    assert patched.status_code == 403, patched.text

    # The operator narrows the policy: retail may no longer read shared/. The schedule that
    # names it fails at its next fire, before its dataset is fingerprinted; the other fires.
    narrowed = world.settings.model_copy(update={"storage_policy": StoragePolicy(teams={
        "retail": TeamAccess(datasets=(f"s3://{world.data}/retail/",))})})
    for schedule in (shared.json(), own.json()):
        fired = httpx.post(f"{world.url}/v1/schedules/{schedule['id']}/run",
                           headers=world.tokens["retail"], timeout=30)
        assert fired.status_code == 202, fired.text
    config = DispatcherConfig(
        api_url=world.url, secret_key=SECRET.encode(),
        artifacts_uri=world.settings.resolved_artifacts_uri,
        models_uri=world.settings.resolved_models_uri, max_active=0,
        access_for=narrowed.access_for,
    )
    dispatcher = Dispatcher(db, LocalBackend(tmp_path / "state"), config)
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    runs = {}
    for schedule in (shared.json(), own.json()):
        page = httpx.get(f"{world.url}/v1/schedules/{schedule['id']}/runs",
                         headers=world.tokens["retail"], timeout=30).json()
        runs[schedule["id"]] = page["items"]
    failed = runs[shared.json()["id"]]
    assert [r["outcome"] for r in failed] == ["failed"], failed
    assert "may not read" in failed[0]["message"] and failed[0]["job_id"] is None
    assert [r["outcome"] for r in runs[own.json()["id"]]] == ["submitted"]
    assert reads_under(s3_requests(), world.data, "shared/") == []
    assert reads_under(s3_requests(), world.data, "retail/") != []  # the fingerprint read
    assert reads_under(s3_requests(), world.data, "vision/") == []


def test_another_teams_model_is_refused_like_a_missing_one(
    world: World, tmp_path: Path,
) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"not read by the API")
    models = world.settings.resolved_models_uri
    registry.publish(team_models_uri(models, "vision"), "detector", "j1", {"best.pt": weights},
                     {})
    answers = {}
    for name in ("detector", "nosuch"):
        spec = world.spec(world.dataset("retail"), model={"base": f"registry://{name}@j1"})
        response = world.post("retail", "/v1/jobs", {"spec": spec})
        answers[name] = (response.status_code, response.json()["code"],
                         response.json()["detail"].replace(name, "NAME"))
    assert answers["detector"] == answers["nosuch"], answers
    assert answers["detector"][:2] == (422, "model_not_found")
    # The owner may use it.
    spec = world.spec(world.dataset("vision"), model={"base": "registry://detector@j1"})
    assert world.post("vision", "/v1/jobs", {"spec": spec}).status_code == 201


class CapturingBackend:
    """Takes launches without running them, so that the test can start the entrypoint itself
    with exactly what a LocalBackend would pass (a recording stand-in for a backend, not a
    mock of anything that could run here: the entrypoint below is the real one)."""

    name = "capturing"
    private_env = True

    def __init__(self) -> None:
        self.requests: list[LaunchRequest] = []

    def launch(self, request: LaunchRequest) -> str:
        self.requests.append(request)
        return f"{request.job_id}/{request.attempt}"

    def poll(self, handle: str) -> BackendStatus:
        return BackendStatus(BackendState.RUNNING)

    def cancel(self, handle: str) -> None:
        pass

    def logs(self, handle: str) -> str:
        return ""


def _run_entrypoint(request: LaunchRequest, home: Path, drop: tuple[str, ...] = ()
                    ) -> subprocess.CompletedProcess[str]:
    env = {**inherited_env(os.environ), **request.env, **request.secrets,
           "TRAINFORGE_HOME": str(home), "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    for name in drop:
        env.pop(name)
    return subprocess.run([sys.executable, "-m", "jobs.train", "--spec", request.spec_uri],
                          env=env, cwd=home.parent, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_job_refuses_a_tampered_spec_before_reading_anything(
    world: World, db: Database, s3_requests: Callable[[], list[str]],
    tmp_path: Path,
) -> None:
    submitted = world.post("retail", "/v1/jobs", {"spec": world.spec(world.dataset("retail"))})
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    backend = CapturingBackend()
    config = DispatcherConfig(
        api_url=world.url, secret_key=SECRET.encode(),
        artifacts_uri=world.settings.resolved_artifacts_uri,
        models_uri=world.settings.resolved_models_uri,
        s3_endpoint_url=world.settings.s3_endpoint_url, access_for=world.settings.access_for,
    )
    dispatcher = Dispatcher(db, backend, config)  # type: ignore[arg-type]
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    (request,) = backend.requests
    assert request.env["TRAINFORGE_JOB_TEAM"] == "retail"
    assert "vision" not in request.env["TRAINFORGE_JOB_ACCESS"]  # only the team's own rules
    assert "TRAINFORGE_SECRET_KEY" not in request.env and "AWS_SECRET_ACCESS_KEY" not in \
        request.env

    # Between launch and start, someone with write access to the artifacts bucket points the
    # job at another team's data.
    store, key = open_location(request.spec_uri)
    tampered = json.loads(store.get(key))
    tampered["dataset"]["uri"] = world.dataset("vision")
    store.put(key, json.dumps(tampered).encode())

    home = tmp_path / "job-home"
    run = _run_entrypoint(request, home)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "[spec_tampered]" in run.stderr + run.stdout
    # Even without the checksum, the job's own access rules refuse the location.
    run = _run_entrypoint(request, home, drop=("TRAINFORGE_SPEC_SHA256",))
    assert run.returncode == 1, run.stdout + run.stderr
    output = run.stderr + run.stdout
    assert "[access_denied]" in output and f"s3://{world.data}/retail/" in output
    assert reads_under(s3_requests(), world.data, "vision/") == []
    # The job told the API why it failed (with its own token, read from its environment).
    events = httpx.get(f"{world.url}/v1/jobs/{job_id}/events", headers=world.tokens["retail"],
                       timeout=30).json()["items"]
    codes = [e["data"]["error_code"] for e in events if "error_code" in e["data"]]
    assert codes[-2:] == ["spec_tampered", "access_denied"], events


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_dispatcher_never_launches_a_tampered_spec(
    world: World, db: Database, tmp_path: Path,
) -> None:
    submitted = world.post("retail", "/v1/jobs", {"spec": world.spec(world.dataset("retail"))})
    job_id = submitted.json()["id"]
    with db.transaction() as session:
        spec_uri = repo.get_job(session, job_id, team="retail").spec_uri
    store, key = open_location(spec_uri)
    tampered = json.loads(store.get(key))
    tampered["resources"]["gpus"] = 8  # beyond what the team was allowed at submission
    store.put(key, json.dumps(tampered).encode())
    backend = CapturingBackend()
    config = DispatcherConfig(
        api_url=world.url, secret_key=SECRET.encode(),
        artifacts_uri=world.settings.resolved_artifacts_uri,
        models_uri=world.settings.resolved_models_uri, access_for=world.settings.access_for,
    )
    dispatcher = Dispatcher(db, backend, config)  # type: ignore[arg-type]
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    assert backend.requests == []
    job = httpx.get(f"{world.url}/v1/jobs/{job_id}", headers=world.tokens["retail"],
                    timeout=30).json()
    assert job["state"] == "FAILED" and job["error"]["code"] == "spec_tampered", job
