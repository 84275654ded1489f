"""A job token dies with its attempt: once the attempt or the job has ended, the token's posts
are refused (401) and change nothing; the job's own last reports before that are accepted.

Real job store (SQLite and PostgreSQL), the real API app; jobs are written to the store and
claimed as the dispatcher does, so that the test controls every step of the state machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api import create_app
from services.api.settings import ApiSettings
from services.store import Database, creation, dispatch, events, tokens
from services.store import jobs as repo
from services.store.domain import NewJob
from services.store.ids import new_job_id
from trainforge.errors import Unauthenticated
from trainforge.events import MessageEvent, ProgressEvent
from trainforge.spec import JobKind
from trainforge.states import JobState

SECRET = b"job-token-lifetime-test-secret"


@pytest.fixture()
def client(tmp_path: Path, database_url: str, artifacts_dir: Path,
           db: Database) -> Iterator[TestClient]:
    settings = ApiSettings(
        home=tmp_path, embedded=True, database_url=database_url,
        artifacts_uri=f"file://{artifacts_dir}", secret_key=SECRET.decode(),
        migrate_on_startup=False, token_cache_s=0,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _token_sha(job_id: str, attempt: int) -> str:
    return tokens.sha256_hex(tokens.job_token(SECRET, job_id, attempt))


def _queue(db: Database, artifacts: Path, *, max_attempts: int = 1,
           team: str = "vision") -> str:
    """A QUEUED job with a real spec file, as the API's submission leaves it."""
    job_id = new_job_id()
    body = json.dumps({"name": "token-test", "dataset": {"uri": "s3://d/p/"}}).encode()
    spec = artifacts / "jobs" / job_id / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_bytes(body)
    with db.transaction() as session:
        creation.insert_job(session, NewJob(
            id=job_id, team=team, kind=JobKind.TRAIN, name="token-test",
            spec_uri=f"file://{spec}", spec_sha256=hashlib.sha256(body).hexdigest(), gpus=1,
            max_attempts=max_attempts))
    return job_id


def _claim(db: Database, job_id: str) -> str:
    """Claim (as a dispatcher) and record the launch; returns the attempt's job token."""
    with db.transaction() as session:
        claimed = dispatch.claim(session, owner="test", backend="test", limit=100,
                                 token_sha256=_token_sha)
    numbers = {a.job.id: a.attempt.number for a in claimed}
    assert job_id in numbers, f"{job_id} was not claimed: {numbers}"
    with db.transaction() as session:
        assert dispatch.record_launch(session, job_id, numbers[job_id], f"run-{job_id}")
    return tokens.job_token(SECRET, job_id, numbers[job_id])


def _settle(db: Database, job_id: str, attempt: int, *, succeeded: bool) -> JobState:
    with db.transaction() as session:
        state = dispatch.settle(session, job_id, attempt, succeeded=succeeded,
                                message="exited", retry_delay=timedelta(0))
    assert state is not None
    return state


def _post(client: TestClient, job_id: str, token: str, event: dict[str, Any]) -> int:
    response = client.post(f"/internal/v1/jobs/{job_id}/events", json=event,
                           headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def _progress(epoch: int, score: float) -> dict[str, Any]:
    return {"type": "progress", "epoch": epoch, "epochs": 3, "metrics": {"m": score}}


def _snapshot(db: Database, job_id: str) -> tuple[Any, ...]:
    """What a post could change: state, progress, metrics, error, and the event count."""
    with db.transaction() as session:
        job = repo.get_job(session, job_id, team=None)
        events = repo.list_events(session, job_id, limit=10_000)
    return job.state, job.progress, job.metrics, job.error, len(events)


def _assert_refused(client: TestClient, db: Database, job_id: str, token: str) -> None:
    """Every kind of post with ``token`` is 401 and leaves the job exactly as it was."""
    before = _snapshot(db, job_id)
    for event in (_progress(99, 9.9),
                  {"type": "progress", "epoch": 9, "epochs": 9, "trial": "t9",
                   "metrics": {"m": 9.9}},
                  {"type": "state", "state": "RUNNING"},
                  {"type": "state", "state": "SUCCEEDED"},
                  {"type": "state", "state": "FAILED", "reason": "forged",
                   "error_code": "forged"},
                  {"type": "message", "message": "forged"}):
        assert _post(client, job_id, token, event) == 401, event
    assert _snapshot(db, job_id) == before
    with db.transaction() as session:
        assert repo.get_job(session, job_id, team=None).trials == ()


def test_the_jobs_own_last_reports_pass_then_its_token_dies(
    client: TestClient, db: Database, artifacts_dir: Path
) -> None:
    job_id = _queue(db, artifacts_dir)
    token = _claim(db, job_id)
    assert _post(client, job_id, token, {"type": "state", "state": "RUNNING"}) == 202
    assert _post(client, job_id, token, _progress(3, 0.3)) == 202
    assert _post(client, job_id, token, {"type": "message", "message": "model published"}) == 202
    # The job's own final report is what makes the job terminal: it must be accepted.
    assert _post(client, job_id, token, {"type": "state", "state": "SUCCEEDED"}) == 202
    state, progress, metrics, _, _ = _snapshot(db, job_id)
    assert state is JobState.SUCCEEDED
    assert progress is not None and progress.epoch == 3 and metrics == {"m": 0.3}
    _assert_refused(client, db, job_id, token)  # SUCCEEDED, before the dispatcher settles
    assert _settle(db, job_id, 1, succeeded=True) is JobState.SUCCEEDED
    _assert_refused(client, db, job_id, token)
    assert _snapshot(db, job_id)[2] == {"m": 0.3}


def test_a_reported_failure_keeps_the_token_until_the_dispatcher_settles(
    client: TestClient, db: Database, artifacts_dir: Path
) -> None:
    job_id = _queue(db, artifacts_dir)
    token = _claim(db, job_id)
    assert _post(client, job_id, token, _progress(1, 0.1)) == 202
    failed = {"type": "state", "state": "FAILED", "reason": "CUDA OOM",
              "error_code": "out_of_memory"}
    assert _post(client, job_id, token, failed) == 202
    # A reported failure is not the end: the run still lives and may say more before it exits.
    assert _snapshot(db, job_id)[0] is JobState.RUNNING
    assert _post(client, job_id, token, {"type": "message", "message": "shutting down"}) == 202
    assert _settle(db, job_id, 1, succeeded=False) is JobState.FAILED
    _assert_refused(client, db, job_id, token)
    state, progress, metrics, error, _ = _snapshot(db, job_id)
    assert (state, metrics, error.code if error else None) == (
        JobState.FAILED, {"m": 0.1}, "out_of_memory")
    assert progress is not None and progress.epoch == 1


def test_an_attempt_that_ended_is_refused_before_its_retry_starts_and_after(
    client: TestClient, db: Database, artifacts_dir: Path
) -> None:
    job_id = _queue(db, artifacts_dir, max_attempts=2)
    first = _claim(db, job_id)
    assert _post(client, job_id, first, _progress(1, 0.1)) == 202
    assert _settle(db, job_id, 1, succeeded=False) is JobState.RETRYING
    # Not terminal, and attempt 1 is still the job's latest: refused because it ended.
    _assert_refused(client, db, job_id, first)
    second = _claim(db, job_id)
    assert second != first
    assert _post(client, job_id, second, _progress(2, 0.2)) == 202
    _assert_refused(client, db, job_id, first)
    assert _snapshot(db, job_id)[2] == {"m": 0.2}


def test_a_cancelled_job_reports_until_its_run_stops_then_its_token_dies(
    client: TestClient, db: Database, artifacts_dir: Path
) -> None:
    job_id = _queue(db, artifacts_dir)
    token = _claim(db, job_id)
    with db.transaction() as session:
        events.request_cancel(session, job_id, team="vision", reason="test")
    assert _snapshot(db, job_id)[0] is JobState.CANCELLING
    assert _post(client, job_id, token, _progress(1, 0.1)) == 202
    assert _settle(db, job_id, 1, succeeded=False) is JobState.CANCELLED
    _assert_refused(client, db, job_id, token)


def test_the_store_refuses_a_job_that_ended_after_its_token_was_checked(
    db: Database, artifacts_dir: Path
) -> None:
    """The route checks the token, then records the event in another transaction: a job that
    ends in between must not be written to either."""
    job_id = _queue(db, artifacts_dir, max_attempts=2)
    token = _claim(db, job_id)
    with db.transaction() as session:
        assert tokens.verify_job_token(session, job_id, token) == 1
        events.apply_reported_event(session, job_id, MessageEvent(message="ok"), attempt=1)
    _settle(db, job_id, 1, succeeded=False)  # RETRYING: attempt 1 ended, the job did not
    with db.transaction() as session:
        with pytest.raises(Unauthenticated, match="attempt 1 .* has ended"):
            tokens.verify_job_token(session, job_id, token)
    with pytest.raises(Unauthenticated, match="has ended"), db.transaction() as session:
        events.apply_reported_event(session, job_id, MessageEvent(message="late"), attempt=1)
    _claim(db, job_id)
    with pytest.raises(Unauthenticated, match="has ended"), db.transaction() as session:
        events.apply_reported_event(session, job_id, MessageEvent(message="stale"), attempt=1)
    _settle(db, job_id, 2, succeeded=True)
    before = _snapshot(db, job_id)
    with pytest.raises(Unauthenticated, match="SUCCEEDED"), db.transaction() as session:
        events.apply_reported_event(
            session, job_id, ProgressEvent(epoch=9, epochs=9, metrics={"m": 9.0}))
    assert _snapshot(db, job_id) == before


def test_a_wrong_token_learns_nothing_about_the_job(
    client: TestClient, db: Database, artifacts_dir: Path
) -> None:
    job_id = _queue(db, artifacts_dir)
    token = _claim(db, job_id)
    _settle(db, job_id, 1, succeeded=True)
    right = client.post(f"/internal/v1/jobs/{job_id}/events", json=_progress(1, 1.0),
                        headers={"Authorization": f"Bearer {token}"})
    wrong = client.post(f"/internal/v1/jobs/{job_id}/events", json=_progress(1, 1.0),
                        headers={"Authorization": "Bearer tfj_" + "0" * 64})
    assert right.status_code == wrong.status_code == 401
    assert "SUCCEEDED" in right.json()["detail"]
    assert "SUCCEEDED" not in wrong.json()["detail"]
