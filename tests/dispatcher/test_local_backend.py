"""LocalBackend: runs the entrypoint as a subprocess, once per (job, attempt), whoever asks."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from services.dispatcher.backends.base import BackendState, LaunchRequest
from services.dispatcher.backends.local import LocalBackend
from tests.fixtures.dispatcher import run_markers, standin_env
from trainforge.spec import JobKind, Resources


def _request(tmp_path: Path, job_id: str, name: str, attempt: int = 1) -> LaunchRequest:
    spec_file = tmp_path / "artifacts" / "jobs" / job_id / "spec.json"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps({"name": name, "dataset": {"uri": "s3://d/p/"},
                                     "train": {"epochs": 2}}))
    return LaunchRequest(
        job_id=job_id, kind=JobKind.TRAIN, spec_uri=f"file://{spec_file}", attempt=attempt,
        resources=Resources(), retries=0, timeout_s=300, team="vision",
        env={"TRAINFORGE_JOB_ID": job_id, "TRAINFORGE_ATTEMPT": str(attempt),
             "TRAINFORGE_ARTIFACTS_URI": f"file://{tmp_path / 'artifacts'}"},
    )


def _wait(backend: LocalBackend, handle: str, timeout_s: float = 60) -> BackendState:
    deadline = time.monotonic() + timeout_s
    while (state := backend.poll(handle).state) in {BackendState.RUNNING, BackendState.PENDING}:
        assert time.monotonic() < deadline, "run did not finish"
        time.sleep(0.05)
    return state


@pytest.fixture()
def backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "state", module="tests.standin", env=standin_env(),
                        kill_grace_s=1.0)


def test_runs_the_module_with_the_request_env_and_reports_success(
    backend: LocalBackend, tmp_path: Path
) -> None:
    request = _request(tmp_path, "job-ok", "ok")
    assert backend.command(request)[1:3] == ["-m", "tests.standin"]
    assert LocalBackend(tmp_path).command(request)[2] == "jobs.train"  # production module
    handle = backend.launch(request)
    assert _wait(backend, handle) is BackendState.SUCCEEDED
    assert "stand-in job job-ok attempt 1" in backend.logs(handle)
    assert (tmp_path / "artifacts/jobs/job-ok/attempts/1/log.txt").exists()


def test_a_failing_run_reports_its_exit_status(backend: LocalBackend, tmp_path: Path) -> None:
    handle = backend.launch(_request(tmp_path, "job-bad", "fail"))
    assert _wait(backend, handle) is BackendState.FAILED
    assert backend.poll(handle).message == "exited with status 3"


def test_launch_is_idempotent_while_running_after_exit_and_across_instances(
    backend: LocalBackend, tmp_path: Path
) -> None:
    request = _request(tmp_path, "job-once", "ok")
    threads = [threading.Thread(target=backend.launch, args=(request,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Another process's view of the same state directory (a restarted dispatcher).
    other = LocalBackend(backend.state_dir, module="tests.standin", env=standin_env())
    assert other.launch(request) == "job-once/1"
    assert _wait(backend, "job-once/1") is BackendState.SUCCEEDED
    assert other.launch(request) == "job-once/1"  # after the exit too
    time.sleep(0.5)
    assert run_markers(tmp_path / "artifacts", "job-once") == {1: 1}
    # A new attempt of the same job is a new run.
    second = backend.launch(_request(tmp_path, "job-once", "ok", attempt=2))
    assert second == "job-once/2" and _wait(backend, second) is BackendState.SUCCEEDED
    assert run_markers(tmp_path / "artifacts", "job-once") == {1: 1, 2: 1}


def test_cancel_stops_the_run(backend: LocalBackend, tmp_path: Path) -> None:
    handle = backend.launch(_request(tmp_path, "job-sleep", "sleep"))
    deadline = time.monotonic() + 30
    while not (backend.state_dir / handle / "pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    pid = int((backend.state_dir / handle / "pid").read_text())
    backend.cancel(handle)
    assert _wait(backend, handle, timeout_s=30) is BackendState.STOPPED
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    backend.cancel(handle)  # cancelling a finished run is not an error


def test_cancel_sends_one_sigterm_then_sigkill_after_the_grace(
    backend: LocalBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that does not stop on SIGTERM gets no second one (that could cut short the log
    upload of a job that is stopping), only SIGKILL once the grace (1 s here) has passed."""
    handle = backend.launch(_request(tmp_path, "job-stubborn", "stubborn"))
    sigterms = tmp_path / "artifacts/jobs/job-stubborn/attempts/1/sigterms"
    deadline = time.monotonic() + 30
    while not sigterms.exists():  # its SIGTERM handler is in place
        assert time.monotonic() < deadline
        time.sleep(0.05)
    asked = time.monotonic()
    while (status := backend.poll(handle)).state is BackendState.RUNNING:  # as the dispatcher
        backend.cancel(handle)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert 1.0 <= time.monotonic() - asked < 10
    assert sigterms.read_text() == "1\n", "one SIGTERM, however often cancel was called"
    # SIGKILL takes the runner too: no exit record (the dispatcher settles a CANCELLING job
    # whose run ended this way as CANCELLED).
    assert status.state is BackendState.FAILED and "killed?" in status.message
    assert "did not stop within 1s of its SIGTERM: killed" in caplog.text


def test_a_run_killed_without_an_exit_record_is_failed_and_unknown_handles_are_unknown(
    backend: LocalBackend, tmp_path: Path
) -> None:
    handle = backend.launch(_request(tmp_path, "job-killed", "sleep"))
    deadline = time.monotonic() + 30
    while not (backend.state_dir / handle / "pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(int((backend.state_dir / handle / "pid").read_text()), signal.SIGKILL)
    status = None
    while time.monotonic() < deadline:
        status = backend.poll(handle)
        if status.state is not BackendState.RUNNING:
            break
        time.sleep(0.05)
    assert status is not None and status.state is BackendState.FAILED
    assert "without recording an exit status" in status.message
    assert backend.poll("no-such-job/1").state is BackendState.UNKNOWN
