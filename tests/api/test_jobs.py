"""Reading and steering jobs: list with filters and cursors, cancel, events, reported progress."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.store import Database, dispatch, events
from services.store import jobs as repo
from tests.fixtures.api import SPEC, claim_all, submit
from trainforge.errors import IllegalTransition
from trainforge.states import ALLOWED_TRANSITIONS, JobState

SWEEP = {
    **SPEC,
    "name": "ppe-sweep",
    "kind": "sweep",
    "sweep": {"trials": 2, "space": {"lr0": {"loguniform": [1e-4, 1e-1]}}},
}


def _post(client: TestClient, job_id: str, token: str, event: dict) -> None:
    response = client.post(f"/internal/v1/jobs/{job_id}/events", json=event,
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text


def test_list_filters_and_cursor_pagination(client: TestClient, auth: dict[str, str]) -> None:
    ids = [submit(client, auth, spec={**SPEC, "name": f"job-{i}"})["id"] for i in range(5)]
    sweep = submit(client, auth, spec=SWEEP)["id"]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=auth)
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/jobs", params=params, headers=auth).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [sweep, *reversed(ids)]  # newest first, nothing twice, nothing missed
    queued = client.get("/v1/jobs", params={"state": "QUEUED", "kind": "train"}, headers=auth)
    assert [j["id"] for j in queued.json()["items"]] == list(reversed(ids[1:]))
    both = client.get("/v1/jobs", params=[("state", "QUEUED"), ("state", "CANCELLED")],
                      headers=auth)
    assert len(both.json()["items"]) == 6
    sweeps = client.get("/v1/jobs", params={"kind": "sweep"}, headers=auth).json()["items"]
    assert [j["id"] for j in sweeps] == [sweep] and sweeps[0]["trials"] == []


@pytest.mark.parametrize("cursor", ["garbage", "djE6eA", "!!!", "djE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5"])
def test_foreign_cursors_are_422(client: TestClient, auth: dict[str, str], cursor: str) -> None:
    response = client.get("/v1/jobs", params={"cursor": cursor}, headers=auth)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


def test_cancel_a_queued_job_then_a_finished_one(client: TestClient, auth: dict[str, str]) -> None:
    job = submit(client, auth)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth)
    assert again.status_code == 409 and again.json()["code"] == "job_state_conflict"
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["items"]
    assert [(e["from_state"], e["to_state"]) for e in events] == [
        (None, "QUEUED"), ("QUEUED", "CANCELLED")]
    assert "cancel requested by vision" in events[-1]["reason"]


def test_cancel_a_launched_job_goes_through_cancelling(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    job = submit(client, auth)
    claim_all(db)
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["state"] == \
        "CANCELLING"
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).json()["state"] == \
        "CANCELLING"


def test_reported_progress_state_and_error_show_in_the_job(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    job = submit(client, auth)
    token = claim_all(db)[job["id"]]
    _post(client, job["id"], token, {"type": "state", "state": "RUNNING"})
    _post(client, job["id"], token, {"type": "progress", "epoch": 2, "epochs": 3,
                                     "metrics": {"metrics/mAP50-95(B)": 0.41}})
    got = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert got["state"] == "RUNNING" and got["attempts"] == 1
    assert got["progress"] == {"epoch": 2, "epochs": 3}
    assert got["metrics"] == {"metrics/mAP50-95(B)": 0.41}
    # A reported failure is recorded; whether to retry is the dispatcher's call.
    _post(client, job["id"], token, {"type": "state", "state": "FAILED", "reason": "CUDA OOM",
                                     "error_code": "out_of_memory"})
    got = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert got["state"] == "RUNNING"
    assert got["error"] == {"code": "out_of_memory", "message": "CUDA OOM"}
    _post(client, job["id"], token, {"type": "message", "message": "resumed", "data": {"e": 2}})
    _post(client, job["id"], token, {"type": "state", "state": "SUCCEEDED"})
    got = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()
    assert got["state"] == "SUCCEEDED" and got["error"] is None and got["finished_at"]
    types = [e["type"] for e in
             client.get(f"/v1/jobs/{job['id']}/events", headers=auth).json()["items"]]
    assert types.count("progress") == 1 and "message" in types


def test_sweeps_carry_a_trials_table(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    job = submit(client, auth, spec=SWEEP)
    token = claim_all(db)[job["id"]]
    for trial, epoch, score in [("t0", 1, 0.1), ("t1", 1, 0.2), ("t0", 2, 0.3)]:
        _post(client, job["id"], token, {"type": "progress", "epoch": epoch, "epochs": 3,
                                         "trial": trial, "metrics": {"m": score}})
    trials = client.get(f"/v1/jobs/{job['id']}", headers=auth).json()["trials"]
    assert [(t["trial"], t["epoch"], t["metrics"]["m"]) for t in trials] == [
        ("t0", 2, 0.3), ("t1", 1, 0.2)]
    listed = client.get("/v1/jobs", headers=auth).json()["items"][0]
    assert len(listed["trials"]) == 2


def test_events_page_after_an_id(client: TestClient, auth: dict[str, str], db: Database) -> None:
    job = submit(client, auth)
    claim_all(db)
    first = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1}, headers=auth).json()
    assert len(first["items"]) == 1
    rest = client.get(f"/v1/jobs/{job['id']}/events", params={"after": first["next_after"]},
                      headers=auth).json()
    assert [e["to_state"] for e in rest["items"]] == ["STARTING"]


def test_every_illegal_transition_is_refused_in_one_place(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    job = submit(client, auth)
    for source in JobState:
        for target in JobState:
            if target in ALLOWED_TRANSITIONS[source]:
                continue
            with db.transaction() as session:
                row = repo.job_row(session, job["id"], None, lock=True)
                row.state = source.value
                with pytest.raises(IllegalTransition):
                    events.transition(session, row, target, "test")
    with db.transaction() as session:
        # None of the refused changes left an event behind.
        assert len(repo.list_events(session, job["id"])) == 1
        assert dispatch.attempts_of(session, job["id"]) == []
