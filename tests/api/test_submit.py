"""Submitting a job: validated, written once, refused with the reason when it must be."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api.settings import ApiSettings, TeamLimits
from services.store import Database, creation
from services.store import jobs as repo
from tests.fixtures.api import SPEC, submit
from trainforge.errors import StorageError

PROBLEM = "application/problem+json"


def _job_count(db: Database, team: str = "vision") -> int:
    with db.transaction() as session:
        return len(repo.list_jobs(session, team, limit=1000)[0])


def test_submit_returns_the_job_and_writes_its_spec(
    client: TestClient, auth: dict[str, str], artifacts_dir: Path
) -> None:
    job = submit(client, auth)
    assert job["state"] == "QUEUED" and job["kind"] == "train" and job["name"] == "ppe-detector"
    assert job["team"] == "vision" and job["attempts"] == 0 and job["max_attempts"] == 3
    assert job["progress"] is None and job["error"] is None and job["trials"] is None
    spec_file = artifacts_dir / "jobs" / job["id"] / "spec.json"
    stored = json.loads(spec_file.read_text())
    assert stored["train"]["epochs"] == 3 and stored["train"]["imgsz"] == 640
    assert job["spec_artifact"] == "spec.json"
    assert client.get(f"/v1/jobs/{job['id']}", headers=auth).json() == job


def test_same_idempotency_key_and_body_returns_the_original_job(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    first = client.post("/v1/jobs", json={"spec": SPEC}, headers={**auth, "Idempotency-Key": "a1"})
    # Same body with other key order: still the same request.
    reordered = dict(reversed(list(SPEC.items())))
    again = client.post("/v1/jobs", json={"spec": reordered},
                        headers={**auth, "Idempotency-Key": "a1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _job_count(db) == 1


def test_same_idempotency_key_with_another_body_is_refused(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    submit(client, auth, **{"Idempotency-Key": "k"})
    other = client.post("/v1/jobs", json={"spec": {**SPEC, "name": "other"}},
                        headers={**auth, "Idempotency-Key": "k"})
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert other.json()["code"] == "idempotency_key_reused"
    assert _job_count(db) == 1


def test_idempotency_keys_are_per_team(
    client: TestClient, auth: dict[str, str], make_token: Callable[[str], str], db: Database
) -> None:
    a = submit(client, auth, **{"Idempotency-Key": "shared"})
    b = submit(client, {"Authorization": f"Bearer {make_token('audio')}"},
               **{"Idempotency-Key": "shared"})
    assert a["id"] != b["id"] and b["team"] == "audio"


def test_without_a_key_each_submit_is_a_new_job(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    assert submit(client, auth)["id"] != submit(client, auth)["id"]
    assert _job_count(db) == 2


def test_malformed_idempotency_key_is_refused(client: TestClient, auth: dict[str, str]) -> None:
    response = client.post("/v1/jobs", json={"spec": SPEC},
                           headers={**auth, "Idempotency-Key": "x" * 256})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


def test_invalid_spec_names_the_field(client: TestClient, auth: dict[str, str]) -> None:
    bad = {**SPEC, "train": {"epochs": 0, "lr": 0.1}}
    response = client.post("/v1/jobs", json={"spec": bad}, headers=auth)
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    paths = {e["path"]: e["message"] for e in response.json()["errors"]}
    assert "spec.train.epochs" in paths
    assert "unknown key 'lr'" in paths["spec.train.lr"] and "lr0" in paths["spec.train.lr"]


@pytest.mark.parametrize(
    "body",
    [
        {"spec": SPEC, "id": "j123"},
        {"spec": SPEC, "team": "other-team"},
        {"spec": SPEC, "state": "SUCCEEDED"},
        {"spec": SPEC, "attempts": 5},
        {"spec": {**SPEC, "state": "RUNNING"}},
        {"spec": {**SPEC, "team": "other-team"}},
        {"spec": {**SPEC, "resources": {"gpus": 1, "priority": 10}}},
    ],
    ids=["id", "team", "state", "attempts", "spec.state", "spec.team", "spec.resources.priority"],
)
def test_mass_assignment_is_refused(
    client: TestClient, auth: dict[str, str], db: Database, body: dict
) -> None:
    response = client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert any("unknown key" in e["message"] for e in response.json()["errors"])
    assert _job_count(db) == 0


def test_bodies_over_1_mib_get_413(client: TestClient, auth: dict[str, str]) -> None:
    big = json.dumps({"spec": {**SPEC, "name": "x" * (1024 * 1024)}}).encode()
    response = client.post("/v1/jobs", content=big,
                           headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 413 and response.headers["content-type"] == PROBLEM

    def chunks():  # no Content-Length: the limit must hold for streamed bodies too
        for _ in range(2 * 1024):
            yield b" " * 1024

    streamed = client.post("/v1/jobs", content=chunks(),
                           headers={**auth, "Content-Type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["code"] == "payload_too_large"


def test_gpu_and_trial_limits_are_403(
    client: TestClient, auth: dict[str, str], settings: ApiSettings
) -> None:
    settings.team_limits["vision"] = TeamLimits(max_gpus_per_job=2, max_sweep_trials=4)
    too_many_gpus = {**SPEC, "resources": {"gpus": 4}}
    response = client.post("/v1/jobs", json={"spec": too_many_gpus}, headers=auth)
    assert response.status_code == 403 and response.json()["code"] == "limit_exceeded"
    assert "4 GPUs" in response.json()["detail"]
    sweep = {**SPEC, "kind": "sweep", "sweep": {"trials": 5, "gpus_per_trial": 0.25,
                                                "space": {"lr0": {"loguniform": [1e-4, 1e-1]}}}}
    response = client.post("/v1/jobs", json={"spec": sweep}, headers=auth)
    assert response.status_code == 403 and "sweep.trials" in response.json()["detail"]


def test_active_job_limit_is_429(
    client: TestClient, auth: dict[str, str], settings: ApiSettings, db: Database
) -> None:
    settings.team_limits["vision"] = TeamLimits(max_active_jobs=2)
    first = submit(client, auth)
    submit(client, auth)
    response = client.post("/v1/jobs", json={"spec": SPEC}, headers=auth)
    assert response.status_code == 429 and response.headers["Retry-After"]
    assert response.json()["code"] == "quota_exceeded"
    client.post(f"/v1/jobs/{first['id']}/cancel", headers=auth)  # frees a slot
    submit(client, auth)
    assert _job_count(db) == 3


def test_no_job_without_its_spec_and_no_visible_half_submission(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = client.app.state.trainforge.artifacts  # type: ignore[attr-defined]

    # The object store refuses the spec: 503, and no job row appears.
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise StorageError("object store unavailable")

    with monkeypatch.context() as patch:
        patch.setattr(store, "put", refuse)
        response = client.post("/v1/jobs", json={"spec": SPEC}, headers=auth)
    assert response.status_code == 503 and response.json()["code"] == "storage_error"
    assert _job_count(db) == 0

    # The database refuses the row after the spec was written: the orphan spec is removed.
    def broken_insert(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database went away")

    async def broken_insert_async(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(creation, "insert_job", broken_insert)  # SQLite's path
    monkeypatch.setattr(creation, "insert_job_within_limit_async",
                        broken_insert_async)  # PostgreSQL
    with pytest.raises(RuntimeError):
        client.post("/v1/jobs", json={"spec": SPEC}, headers=auth)
    assert _job_count(db) == 0
    assert not list((artifacts_dir / "jobs").glob("*/spec.json"))
