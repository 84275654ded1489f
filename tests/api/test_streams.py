"""Server-sent events and logs: whole, resumed, and followed until the job ends."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import select

from services.store import Database, dispatch
from services.store.tables import JobRow
from tests.fixtures.api import claim_all, submit


def _sse(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(":"))
        if "data" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"],
                           "data": json.loads(fields["data"])})
    return events


def _finish_later(client: TestClient, job_id: str, token: str, db: Database,
                  delay: float = 0.3) -> threading.Thread:
    def run() -> None:
        with db.transaction() as session:
            dispatch.record_launch(session, job_id, 1, "h")
        time.sleep(delay)
        headers = {"Authorization": f"Bearer {token}"}
        for event in ({"type": "progress", "epoch": 1, "epochs": 1, "metrics": {"m": 1.0}},
                      {"type": "state", "state": "SUCCEEDED"}):
            client.post(f"/internal/v1/jobs/{job_id}/events", json=event, headers=headers)
        with db.transaction() as session:
            dispatch.settle(session, job_id, 1, succeeded=True, message="exited 0",
                            retry_delay=timedelta(0))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sse_streams_events_until_the_job_ends(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    job = submit(client, auth)
    token = claim_all(db)[job["id"]]
    writer = _finish_later(client, job["id"], token, db)
    response = client.get(f"/v1/jobs/{job['id']}/events",
                          headers={**auth, "Accept": "text/event-stream"})
    writer.join()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse(response.text)
    kinds = [(e["event"], e["data"].get("to_state")) for e in events]
    assert kinds[0] == ("state", "QUEUED") and kinds[-1] == ("state", "SUCCEEDED")
    assert ("progress", None) in kinds
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)

    # Reconnecting with Last-Event-ID resumes after that event.
    resumed = client.get(f"/v1/jobs/{job['id']}/events",
                         headers={**auth, "Accept": "text/event-stream",
                                  "Last-Event-ID": str(events[1]["id"])})
    assert [e["id"] for e in _sse(resumed.text)] == [e["id"] for e in events[2:]]


def test_following_the_log_of_a_job_that_reported_its_own_end_ends(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path
) -> None:
    # What `trainforge serve` does: the run posts SUCCEEDED itself, then exits shipping its
    # last log lines. The dispatcher still polls the run (dispatch.in_flight) and records its
    # exit, which is what ends a follower.
    job = submit(client, auth)
    token = claim_all(db)[job["id"]]
    with db.transaction() as session:
        dispatch.record_launch(session, job["id"], 1, "h")
    log = artifacts_dir / "jobs" / job["id"] / "attempts" / "1" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1\ndone\n")
    client.post(f"/internal/v1/jobs/{job['id']}/events", json={"type": "state",
                "state": "SUCCEEDED"}, headers={"Authorization": f"Bearer {token}"})
    with db.transaction() as session:
        row = session.scalars(select(JobRow).where(JobRow.id == job["id"])).one()
        assert row.state == "SUCCEEDED"
        assert [a.job.id for a in dispatch.in_flight(session)] == [job["id"]], \
            "the dispatcher still polls the run of a job that reported its own success"
        dispatch.settle(session, job["id"], 1, succeeded=True, message="exited 0",
                        retry_delay=timedelta(0))
    started = time.monotonic()
    followed = client.get(f"/v1/jobs/{job['id']}/logs", params={"follow": "true"}, headers=auth)
    assert followed.status_code == 200 and followed.text == "epoch 1\ndone\n"
    assert time.monotonic() - started < 5


def test_logs_whole_and_followed(
    client: TestClient, auth: dict[str, str], db: Database, artifacts_dir: Path
) -> None:
    job = submit(client, auth)
    assert client.get(f"/v1/jobs/{job['id']}/logs", headers=auth).text == ""  # not started
    token = claim_all(db)[job["id"]]
    log = artifacts_dir / "jobs" / job["id"] / "attempts" / "1" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1\n")
    assert client.get(f"/v1/jobs/{job['id']}/logs", headers=auth).text == "epoch 1\n"
    assert client.get(f"/v1/jobs/{job['id']}/logs?attempt=1", headers=auth).text == "epoch 1\n"
    assert client.get(f"/v1/jobs/{job['id']}/logs?attempt=2", headers=auth).status_code == 404

    def grow() -> None:
        time.sleep(0.2)
        log.write_text("epoch 1\nepoch 2\n")

    grower = threading.Thread(target=grow)
    grower.start()
    writer = _finish_later(client, job["id"], token, db, delay=0.5)
    followed = client.get(f"/v1/jobs/{job['id']}/logs", params={"follow": "true"},
                          headers=auth)
    grower.join()
    writer.join()
    assert followed.status_code == 200 and followed.text == "epoch 1\nepoch 2\n"
