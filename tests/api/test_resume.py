"""POST /v1/jobs/{id}/resume: a stopped training job continues as a new, linked job.

The real app on the real job store (SQLite and PostgreSQL) and a local artifacts directory.
A "stopped job" here went through the real paths: submitted, claimed by a dispatcher, reported
its epochs through the internal events route, then cancelled or failed as the dispatcher
settles it; its checkpoint is a file where a training worker uploads it (the API copies it and
never opens it, so its bytes are arbitrary).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api import create_app
from services.api.settings import ApiSettings
from services.store import Database, dispatch, resumption, submission
from services.store.creation import AlreadyResumed
from services.store.settings import TeamLimits
from tests.fixtures.api import SPEC, claim_all, submit
from trainforge.access import StoragePolicy, TeamAccess

TRAIN = {**SPEC, "retries": 0}  # one attempt: a failed run ends the job
SWEEP = {**TRAIN, "name": "ppe-sweep", "kind": "sweep",
         "sweep": {"trials": 2, "space": {"lr0": {"loguniform": [1e-4, 1e-1]}}}}
LAST, BEST = b"last.pt after epoch 2", b"best.pt of epoch 1"


def _checkpoints(artifacts_dir: Path, job_id: str) -> Path:
    return artifacts_dir / "jobs" / job_id / "checkpoints"


def _stopped(client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path, *,
             how: str = "cancelled", epochs_done: int = 2, spec: dict[str, Any] | None = None,
             checkpoint: bool = True) -> str:
    """A job that trained ``epochs_done`` epochs of 3 and was then cancelled or failed."""
    job_id = submit(client, auth, spec=spec or TRAIN)["id"]
    token = claim_all(db)[job_id]
    job_auth = {"Authorization": f"Bearer {token}"}
    for epoch in range(1, epochs_done + 1):
        response = client.post(f"/internal/v1/jobs/{job_id}/events", headers=job_auth,
                               json={"type": "progress", "epoch": epoch, "epochs": 3,
                                     "metrics": {"metrics/mAP50-95(B)": 0.1 * epoch}})
        assert response.status_code == 202, response.text
    if checkpoint:
        _checkpoints(artifacts_dir, job_id).mkdir(parents=True)
        (_checkpoints(artifacts_dir, job_id) / "last.pt").write_bytes(LAST)
        (_checkpoints(artifacts_dir, job_id) / "best.pt").write_bytes(BEST)
    if how == "cancelled":
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()["state"] == \
            "CANCELLING"
    if how in ("cancelled", "failed"):
        with db.transaction() as session:
            dispatch.settle(session, job_id, 1, succeeded=False, message="exit 1",
                            retry_delay=timedelta(0), error_code="training_failed")
    elif how == "succeeded":
        with db.transaction() as session:
            dispatch.settle(session, job_id, 1, succeeded=True, message="published",
                            retry_delay=timedelta(0))
    return job_id


def _job_ids(client: TestClient, auth: dict[str, str]) -> list[str]:
    return [j["id"] for j in client.get("/v1/jobs", headers=auth).json()["items"]]


def _job_files(artifacts_dir: Path) -> set[Path]:
    return {p for p in (artifacts_dir / "jobs").rglob("*") if p.is_file()}


@pytest.mark.parametrize("how", ["cancelled", "failed"])
def test_a_stopped_job_resumes_as_a_new_linked_job_from_its_checkpoint(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path, how: str
) -> None:
    old = _stopped(client, auth, db, artifacts_dir, how=how)
    assert client.get(f"/v1/jobs/{old}", headers=auth).json()["state"] == how.upper()

    response = client.post(f"/v1/jobs/{old}/resume", json={"epochs": 5}, headers=auth)

    assert response.status_code == 201, response.text
    new = response.json()
    assert response.headers["location"] == f"/v1/jobs/{new['id']}"
    assert new["id"] != old and new["resumed_from"] == old
    assert (new["state"], new["attempts"], new["kind"], new["name"]) == (
        "QUEUED", 0, "train", TRAIN["name"])
    # It starts where the stopped job's checkpoint stands, of the new total.
    assert new["progress"] == {"epoch": 2, "epochs": 5}
    assert client.get(f"/v1/jobs/{new['id']}", headers=auth).json() == new
    # Its own checkpoints: copies of the stopped job's, in the place every attempt looks.
    assert (_checkpoints(artifacts_dir, new["id"]) / "last.pt").read_bytes() == LAST
    assert (_checkpoints(artifacts_dir, new["id"]) / "best.pt").read_bytes() == BEST
    # The stopped job's spec with only train.epochs changed.
    old_spec = json.loads((artifacts_dir / "jobs" / old / "spec.json").read_text())
    new_spec = json.loads((artifacts_dir / "jobs" / new["id"] / "spec.json").read_text())
    assert new_spec["train"].pop("epochs") == 5 and old_spec["train"].pop("epochs") == 3
    assert new_spec == old_spec
    events = client.get(f"/v1/jobs/{new['id']}/events", headers=auth).json()["items"]
    assert [(e["to_state"], e["reason"]) for e in events] == [
        ("QUEUED", f"resumed from job {old}")]
    # The stopped job is left as it was.
    assert client.get(f"/v1/jobs/{old}", headers=auth).json()["state"] == how.upper()
    assert (_checkpoints(artifacts_dir, old) / "last.pt").read_bytes() == LAST


def test_without_a_body_the_epochs_stay_and_the_dashboard_links_both_ways(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path
) -> None:
    old = _stopped(client, auth, db, artifacts_dir)
    response = client.post(f"/v1/jobs/{old}/resume", headers=auth)
    assert response.status_code == 201, response.text
    new = response.json()
    assert new["progress"] == {"epoch": 2, "epochs": 3}
    listed = {j["id"]: j["resumed_from"] for j in
              client.get("/v1/jobs", headers=auth).json()["items"]}
    assert listed == {new["id"]: old, old: None}

    signed_in = client.post("/ui/login", data={"token": auth["Authorization"].split()[1]},
                            headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert signed_in.status_code == 303
    old_page = client.get(f"/ui/jobs/{old}").text
    new_page = client.get(f"/ui/jobs/{new['id']}").text
    assert f'<dt>Resumed as</dt><dd><a href="/ui/jobs/{new["id"]}">' in old_page
    assert "Resumed from" not in old_page
    assert f'<dt>Resumed from</dt><dd><a href="/ui/jobs/{old}">' in new_page
    assert "Resumed as" not in new_page


def _refused(client: TestClient, auth: dict[str, str], job_id: str, status: int, code: str,
             body: dict[str, Any] | None = None) -> str:
    before = _job_ids(client, auth)
    response = client.post(f"/v1/jobs/{job_id}/resume", json=body, headers=auth)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text
    assert _job_ids(client, auth) == before, "a refused resumption creates no job"
    return str(response.json()["detail"])


def test_what_cannot_be_resumed_is_409_and_says_what_to_do(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path
) -> None:
    succeeded = _stopped(client, auth, db, artifacts_dir, how="succeeded")
    detail = _refused(client, auth, succeeded, 409, "job_not_resumable")
    assert "succeeded" in detail and f"registry://{TRAIN['name']}@{succeeded}" in detail

    running = _stopped(client, auth, db, artifacts_dir, how="running")
    detail = _refused(client, auth, running, 409, "job_not_resumable")
    assert "is RUNNING" in detail and f"trainforge jobs cancel {running}" in detail
    client.post(f"/v1/jobs/{running}/cancel", headers=auth)
    assert "once it is CANCELLED" in _refused(client, auth, running, 409, "job_not_resumable")

    queued = submit(client, auth, spec=TRAIN)["id"]
    assert "is QUEUED" in _refused(client, auth, queued, 409, "job_not_resumable")

    sweep = _stopped(client, auth, db, artifacts_dir, spec=SWEEP)
    detail = _refused(client, auth, sweep, 409, "job_not_resumable")
    assert "is a sweep job; only training jobs can be resumed" in detail

    never_trained = _stopped(client, auth, db, artifacts_dir, epochs_done=0, checkpoint=False)
    detail = _refused(client, auth, never_trained, 409, "job_not_resumable")
    assert "left no checkpoint" in detail and "submit its spec again" in detail

    stopped = _stopped(client, auth, db, artifacts_dir)
    first = client.post(f"/v1/jobs/{stopped}/resume", headers=auth).json()["id"]
    detail = _refused(client, auth, stopped, 409, "job_not_resumable")
    assert f"already resumed as job {first}" in detail
    assert f"trainforge jobs resume {first}" in detail


def test_two_resumptions_that_pass_the_checks_at_once_cannot_both_commit(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path
) -> None:
    """The unique ``jobs.resumed_from`` decides a race: the loser's creation is refused in its
    own transaction and leaves no row, spec or checkpoint behind."""
    old = _stopped(client, auth, db, artifacts_dir)
    state = client.app.state.trainforge  # type: ignore[attr-defined]
    late = resumption.plan(state.db, state.artifacts, state.artifacts_prefix, "vision", old,
                           epochs=None)  # planned before the other request commits
    first = client.post(f"/v1/jobs/{old}/resume", headers=auth).json()["id"]
    files = _job_files(artifacts_dir)
    with pytest.raises(AlreadyResumed):
        submission.create_job(state.db, state.artifacts, state.artifacts_prefix,
                              submission.JobRequest("vision", late.spec, TeamLimits(),
                                                    access=state.access_for("vision")),
                              resume=late.source)
    assert _job_ids(client, auth) == [first, old]
    assert _job_files(artifacts_dir) == files


def test_epochs_below_what_was_trained_or_out_of_bounds_are_422(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path
) -> None:
    old = _stopped(client, auth, db, artifacts_dir)  # 2 epochs trained
    detail = _refused(client, auth, old, 422, "spec_invalid", {"epochs": 1})
    assert "1 is fewer than the 2 epochs job" in detail and "ask for 2 or more" in detail
    for body in ({"epochs": 0}, {"epochs": 1001}, {"epochs": "many"}, {"epoch": 5}):
        _refused(client, auth, old, 422, "validation_failed", body)
    # Exactly what it trained is allowed: it evaluates and publishes what it has.
    response = client.post(f"/v1/jobs/{old}/resume", json={"epochs": 2}, headers=auth)
    assert response.status_code == 201 and response.json()["progress"] == {"epoch": 2,
                                                                          "epochs": 2}


def test_another_teams_job_is_not_found(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path,
    make_token: Callable[[str], str],
) -> None:
    old = _stopped(client, auth, db, artifacts_dir)
    other = {"Authorization": f"Bearer {make_token('audio')}"}
    details = []
    for job_id in (old, "j" + "0" * 26):
        response = client.post(f"/v1/jobs/{job_id}/resume", json={"epochs": 9}, headers=other)
        assert response.status_code == 404 and response.json()["code"] == "job_not_found"
        details.append(response.json()["detail"].replace(job_id, "X"))
    assert details[0] == details[1], "nothing tells the other team that the job exists"
    assert client.get("/v1/jobs", headers=other).json()["items"] == []


def test_a_retry_with_the_same_key_is_replayed_and_another_body_is_refused(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path
) -> None:
    old = _stopped(client, auth, db, artifacts_dir)
    headers = {**auth, "Idempotency-Key": "resume-1"}
    first = client.post(f"/v1/jobs/{old}/resume", json={"epochs": 4}, headers=headers)
    again = client.post(f"/v1/jobs/{old}/resume", json={"epochs": 4}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = client.post(f"/v1/jobs/{old}/resume", json={"epochs": 6}, headers=headers)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    # The key names one request: a submission with it is another one.
    submitted = client.post("/v1/jobs", json={"spec": TRAIN}, headers=headers)
    assert submitted.status_code == 422
    assert len(_job_ids(client, auth)) == 2


def test_limits_and_access_are_checked_again_and_a_refusal_leaves_nothing(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path,
    settings: ApiSettings,
) -> None:
    old = _stopped(client, auth, db, artifacts_dir)
    files = _job_files(artifacts_dir)
    settings.team_limits["vision"] = TeamLimits(max_gpus_per_job=0)
    assert "at most 0 per job" in _refused(client, auth, old, 403, "limit_exceeded")
    # The quota is checked once the checkpoints are copied: the copies go again.
    settings.team_limits["vision"] = TeamLimits(max_active_jobs=0)
    _refused(client, auth, old, 429, "quota_exceeded")
    assert _job_files(artifacts_dir) == files, "no spec or checkpoint of a refused job is left"
    settings.team_limits.pop("vision")

    # The team may no longer read the dataset: the same 403 a new submission gets.
    narrower = settings.model_copy(update={"storage_policy": StoragePolicy(
        default=TeamAccess(datasets=("s3://elsewhere/",), weights=()))})
    with TestClient(create_app(narrower)) as restricted:
        detail = _refused(restricted, auth, old, 403, "access_denied")
    assert TRAIN["dataset"]["uri"] in detail
    assert client.post(f"/v1/jobs/{old}/resume", headers=auth).status_code == 201
