"""Which failures are retried: a refusal that no retry can change fails the job at once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.store import Database, creation, dispatch, events
from services.store import jobs as repo
from services.store.domain import NewJob
from services.store.ids import new_job_id
from trainforge.events import StateEvent
from trainforge.spec import JobKind
from trainforge.states import JobState

PERMANENT = ["spec_invalid", "spec_tampered", "location_invalid", "access_denied",
             "dataset_invalid", "dataset_not_found", "dataset_unsafe", "weights_unavailable",
             "weights_unsafe", "model_not_found", "resources_unavailable", "retries_exhausted"]


def _fail_first_attempt(db: Database, code: str) -> tuple[JobState, int]:
    job_id = new_job_id()
    with db.transaction() as session:
        creation.insert_job(session, NewJob(id=job_id, team="vision", kind=JobKind.TRAIN,
                                        name="ppe", spec_uri="file:///nowhere/spec.json",
                                        spec_sha256="", gpus=0, max_attempts=3))
    with db.transaction() as session:
        (claimed,) = dispatch.claim(session, owner="test", backend="test", limit=1,
                                    token_sha256=lambda job, n: f"{job}-{n}")
        dispatch.record_launch(session, job_id, claimed.attempt.number, "handle")
        dispatch.mark_running(session, job_id, claimed.attempt.number)
    with db.transaction() as session:
        events.apply_reported_event(session, job_id, StateEvent(state="FAILED", reason="no",
                                                              error_code=code))
        state = dispatch.settle(session, job_id, 1, succeeded=False, message="exited 1",
                                retry_delay=timedelta(0))
        job = repo.get_job(session, job_id, team=None)
    assert state is job.state
    return job.state, job.attempts


@pytest.mark.parametrize("code", PERMANENT)
def test_a_refusal_fails_the_job_without_a_retry(db: Database, code: str) -> None:
    assert _fail_first_attempt(db, code) == (JobState.FAILED, 1)


@pytest.mark.parametrize("code", ["training_failed", "storage_error", "cluster_unavailable",
                                  "internal"])
def test_a_failure_a_retry_may_fix_is_retried(db: Database, code: str) -> None:
    assert _fail_first_attempt(db, code) == (JobState.RETRYING, 1)
