"""The dispatcher end to end: real job store, real API, LocalBackend running tests.standin."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx

from services.dispatcher.dispatcher import Dispatcher
from services.store import Database, dispatch
from tests.fixtures.dispatcher import ApiServer, config, drive, jobs, run_markers
from trainforge.states import JobState

SWEEP = {"kind": "sweep", "sweep": {"trials": 2, "space": {"lr0": {"loguniform": [1e-4, 0.1]}}}}


def test_a_job_that_dies_before_reporting_fails_with_its_last_output(
    dispatcher: Dispatcher, db: Database, api_server: ApiServer,
    submit: Callable[..., str], team_headers: dict[str, str],
) -> None:
    crashed = submit("crash", retries=0)
    drive(dispatcher, lambda: all(j.state.terminal for j in jobs(db, crashed)))
    (job,) = jobs(db, crashed)
    assert job.state is JobState.FAILED and job.error is not None
    assert job.error.code == "run_failed"
    assert "last output:" in job.error.message
    assert "ImportError: stand-in crashed before it could report" in job.error.message


def _states(api: ApiServer, headers: dict[str, str], job_id: str) -> list[str]:
    events = httpx.get(f"{api.url}/v1/jobs/{job_id}/events", headers=headers).json()["items"]
    return [e["to_state"] for e in events if e["type"] == "state"]


def test_jobs_run_retry_and_fail_as_their_outcomes_say(
    dispatcher: Dispatcher, db: Database, api_server: ApiServer,
    submit: Callable[..., str], team_headers: dict[str, str],
) -> None:
    ok = submit("ok")
    sweep = submit("sweep-ok", **SWEEP)
    flaky = submit("flaky", retries=1)
    failing = submit("fail", retries=1)
    invalid = submit("invalid", retries=2)
    all_ids = (ok, sweep, flaky, failing, invalid)
    drive(dispatcher, lambda: all(j.state.terminal for j in jobs(db, *all_ids)))

    by_id = {j.id: j for j in jobs(db, *all_ids)}
    assert by_id[ok].state is JobState.SUCCEEDED and by_id[ok].attempts == 1
    assert _states(api_server, team_headers, ok) == ["QUEUED", "STARTING", "RUNNING", "SUCCEEDED"]
    got = httpx.get(f"{api_server.url}/v1/jobs/{ok}", headers=team_headers).json()
    assert got["progress"] == {"epoch": 3, "epochs": 3}
    assert got["metrics"]["metrics/mAP50-95(B)"] == 0.3

    trials = httpx.get(f"{api_server.url}/v1/jobs/{sweep}", headers=team_headers).json()["trials"]
    assert [(t["trial"], t["epoch"]) for t in trials] == [("trial_0", 3), ("trial_1", 3)]

    assert by_id[flaky].state is JobState.SUCCEEDED and by_id[flaky].attempts == 2
    assert by_id[flaky].error is None
    assert _states(api_server, team_headers, flaky) == [
        "QUEUED", "STARTING", "RUNNING", "RETRYING", "STARTING", "RUNNING", "SUCCEEDED"]

    assert by_id[failing].state is JobState.FAILED and by_id[failing].attempts == 2
    assert by_id[failing].error is not None and by_id[failing].error.code == "standin_failure"

    # Not retryable: one attempt although two retries were allowed.
    assert by_id[invalid].state is JobState.FAILED and by_id[invalid].attempts == 1
    assert by_id[invalid].error is not None and by_id[invalid].error.code == "dataset_invalid"

    for job_id, attempts in ((ok, 1), (flaky, 2), (failing, 2), (invalid, 1)):
        assert run_markers(api_server.artifacts, job_id) == dict.fromkeys(range(1, attempts + 1), 1)
    log = httpx.get(f"{api_server.url}/v1/jobs/{ok}/logs", headers=team_headers).text
    assert "epoch 3/3 done" in log
    names = {a["name"] for a in
             httpx.get(f"{api_server.url}/v1/jobs/{ok}/artifacts", headers=team_headers)
             .json()["items"]}
    assert {"spec.json", "attempts/1/log.txt", "train/best.pt"} <= names

    # The job reported its own success before it exited: the dispatcher still records how its
    # run ended, and only then are its artifacts (its log's last lines) complete.
    def settled() -> bool:
        with db.transaction() as session:
            return dispatch.attempts_of(session, ok)[-1].outcome == "succeeded"

    drive(dispatcher, settled, timeout_s=30)
    assert httpx.get(f"{api_server.url}/v1/jobs/{ok}/artifacts",
                     headers=team_headers).json()["complete"] is True


def test_cancel_a_running_job_stops_its_process(
    dispatcher: Dispatcher, db: Database, api_server: ApiServer,
    submit: Callable[..., str], team_headers: dict[str, str],
) -> None:
    job_id = submit("sleep")
    drive(dispatcher, lambda: jobs(db, job_id)[0].state is JobState.RUNNING)
    pid_file = dispatcher.backend.state_dir / job_id / "1" / "pid"  # type: ignore[attr-defined]
    drive(dispatcher, pid_file.exists)
    pid = int(pid_file.read_text())
    response = httpx.post(f"{api_server.url}/v1/jobs/{job_id}/cancel", headers=team_headers)
    assert response.json()["state"] == "CANCELLING"
    drive(dispatcher, lambda: jobs(db, job_id)[0].state.terminal)
    assert jobs(db, job_id)[0].state is JobState.CANCELLED
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
    assert _states(api_server, team_headers, job_id)[-2:] == ["CANCELLING", "CANCELLED"]


def test_max_active_holds_jobs_in_the_queue(
    db: Database, local_backend: object, api_server: ApiServer,
    submit: Callable[..., str], team_headers: dict[str, str],
) -> None:
    dispatcher = Dispatcher(db, local_backend, config(api_server, max_active=1))  # type: ignore[arg-type]
    first, second = submit("sleep"), submit("ok")
    try:
        drive(dispatcher, lambda: jobs(db, first)[0].state is JobState.RUNNING)
        dispatcher.run_once()
        assert jobs(db, second)[0].state is JobState.QUEUED
        httpx.post(f"{api_server.url}/v1/jobs/{first}/cancel", headers=team_headers)
        drive(dispatcher, lambda: jobs(db, second)[0].state is JobState.SUCCEEDED)
    finally:
        dispatcher.close()
    with db.transaction() as session:
        assert [a.outcome for a in dispatch.attempts_of(session, first)] == ["cancelled"]


def test_a_job_cancelled_while_queued_is_never_launched(
    dispatcher: Dispatcher, db: Database, api_server: ApiServer,
    submit: Callable[..., str], team_headers: dict[str, str],
) -> None:
    job_id = submit("ok")
    httpx.post(f"{api_server.url}/v1/jobs/{job_id}/cancel", headers=team_headers)
    dispatcher.run_once()
    assert jobs(db, job_id)[0].state is JobState.CANCELLED and jobs(db, job_id)[0].attempts == 0
