"""Crash safety: a dispatcher killed at any point never loses a job nor launches one twice.

Two layers:

- randomized in-process crash injection (≥ 100 runs per job store): the dispatcher raises a
  simulated crash at the points between its commits, a fresh instance takes over, and a
  recording backend (idempotent by (job, attempt), like every real backend) counts starts;
- real processes: ``python -m services.dispatcher`` and a dispatcher that SIGKILLs itself in
  each window, with LocalBackend and tests.standin, counted by the runs' own markers.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from services.dispatcher.backends.base import BackendState, BackendStatus, LaunchRequest
from services.dispatcher.dispatcher import Dispatcher
from services.store import Database, creation, dispatch
from services.store.domain import NewJob
from services.store.ids import new_job_id
from tests.fixtures.dispatcher import ROOT, SECRET, ApiServer, config, drive, jobs, run_markers
from tests.fixtures.network import free_port
from trainforge.spec import JobKind
from trainforge.states import JobState

pytestmark = pytest.mark.slow  # real dispatcher processes, killed

RUNS = int(os.environ.get("CRASH_RUNS", "100"))
POINTS = ("after_claim", "after_launch", "after_record")


class SimulatedCrash(BaseException):
    """Raised at an injection point: unwinds like a process death (nothing else runs)."""


class RecordingBackend:
    """Counts real starts; launching a known (job, attempt) returns the existing run, as the
    Backend contract requires. Attempt 1 of the jobs in ``flaky`` fails."""

    name = "recording"

    def __init__(self, flaky: set[str]) -> None:
        self.flaky = flaky
        self.starts: Counter[str] = Counter()
        self.polls: Counter[str] = Counter()

    def launch(self, request: LaunchRequest) -> str:
        handle = f"{request.job_id}/{request.attempt}"
        if handle not in self.starts:
            self.starts[handle] += 1
        return handle

    def poll(self, handle: str) -> BackendStatus:
        if handle not in self.starts:
            return BackendStatus(BackendState.UNKNOWN)
        self.polls[handle] += 1
        if self.polls[handle] < 2:
            return BackendStatus(BackendState.RUNNING)
        job_id, attempt = handle.split("/")
        if job_id in self.flaky and attempt == "1":
            return BackendStatus(BackendState.FAILED, "exited with status 1")
        return BackendStatus(BackendState.SUCCEEDED, "exited 0")

    def cancel(self, handle: str) -> None:
        pass

    def logs(self, handle: str) -> str:
        return ""


def _queue(db: Database, artifacts: Path, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        job_id = new_job_id()
        spec_file = artifacts / "jobs" / job_id / "spec.json"
        spec_file.parent.mkdir(parents=True)
        body = b'{"name": "crash-test", "dataset": {"uri": "s3://d/p/"}}'
        spec_file.write_bytes(body)
        with db.transaction() as session:
            creation.insert_job(session, NewJob(id=job_id, team="vision", kind=JobKind.TRAIN,
                                            name="crash-test", spec_uri=f"file://{spec_file}",
                                            spec_sha256=hashlib.sha256(body).hexdigest(), gpus=1,
                                            max_attempts=3))
        ids.append(job_id)
    return ids


def test_randomized_crashes_lose_and_duplicate_nothing(
    db: Database, api_server: ApiServer, tmp_path: Path
) -> None:
    rng = random.Random(20261127)
    crashes: Counter[str] = Counter()
    for run in range(RUNS):
        job_ids = _queue(db, tmp_path / "artifacts", rng.randint(1, 3))
        flaky = {j for j in job_ids if rng.random() < 0.3}
        backend = RecordingBackend(flaky)
        probability = rng.choice([0.15, 0.35, 0.6])

        def fault(point: str, probability: float = probability) -> None:
            if rng.random() < probability:
                crashes[point] += 1
                raise SimulatedCrash(point)

        for _generation in range(500):
            if all(j.state.terminal for j in jobs(db, *job_ids)):
                break
            # A fresh dispatcher (new owner id, empty memory), like a restarted process.
            dispatcher = Dispatcher(db, backend, config(api_server), fault=fault)
            try:
                for _ in range(rng.randint(1, 4)):
                    dispatcher.run_once()
            except SimulatedCrash:
                pass
            finally:
                dispatcher.close()  # a dead process's connections close with it
        else:
            pytest.fail(f"run {run}: jobs not finished after 500 dispatcher generations")

        finished = jobs(db, *job_ids)
        assert [j.state for j in finished] == [JobState.SUCCEEDED] * len(job_ids), run
        with db.transaction() as session:
            attempts = {j: dispatch.attempts_of(session, j) for j in job_ids}
        for job in finished:
            expected = 2 if job.id in flaky else 1
            assert job.attempts == expected == len(attempts[job.id]), (run, job.id)
            for attempt in attempts[job.id]:
                handle = f"{job.id}/{attempt.number}"
                assert attempt.handle == handle and backend.starts[handle] == 1, (run, handle)
        launched = {f"{j}/{a.number}" for j, rows in attempts.items() for a in rows}
        assert set(backend.starts) == launched, run  # no run without its attempt record
    print(f"{RUNS} runs, simulated crashes per point: {dict(crashes)}")
    assert all(crashes[point] >= 20 for point in POINTS), crashes


def _dispatcher_env(database_url: str, api: ApiServer, state_dir: Path, home: Path,
                    metrics_port: int) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT),
        "YOLO_OFFLINE": "1",
        "TRAINFORGE_HOME": str(home),
        "TRAINFORGE_DATABASE_URL": database_url,
        "TRAINFORGE_SECRET_KEY": SECRET,
        "TRAINFORGE_API_URL": api.url,
        "TRAINFORGE_ARTIFACTS_URI": f"file://{api.artifacts}",
        "TRAINFORGE_DISPATCHER_STATE_DIR": str(state_dir),
        "TRAINFORGE_DISPATCHER_LOCAL_MODULE": "tests.standin",
        "TRAINFORGE_DISPATCHER_POLL_INTERVAL_S": "0.1",
        "TRAINFORGE_DISPATCHER_RETRY_DELAY_S": "0",
        "TRAINFORGE_DISPATCHER_METRICS_PORT": str(metrics_port),
        "TRAINFORGE_DISPATCHER_METRICS_HOST": "127.0.0.1",
    }


@pytest.mark.parametrize("point", ["after_claim", "after_launch"])
def test_a_dispatcher_process_killed_in_each_window_loses_and_duplicates_nothing(
    point: str, db: Database, database_url: str, api_server: ApiServer, tmp_path: Path,
    submit: Callable[..., str], local_backend: object,
) -> None:
    job_id = submit("ok")
    state_dir = tmp_path / "state"
    env = _dispatcher_env(database_url, api_server, state_dir, tmp_path, free_port())
    killed = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("killed_dispatcher.py")), point],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    with db.transaction() as session:
        attempts = dispatch.attempts_of(session, job_id)
    assert len(attempts) == 1 and attempts[0].handle is None  # died before recording
    # A fresh dispatcher finds the stranded attempt and completes it.
    dispatcher = Dispatcher(db, local_backend, config(api_server))  # type: ignore[arg-type]
    try:
        drive(dispatcher, lambda: jobs(db, job_id)[0].state.terminal)
    finally:
        dispatcher.close()
    assert jobs(db, job_id)[0].state is JobState.SUCCEEDED and jobs(db, job_id)[0].attempts == 1
    time.sleep(0.3)
    assert run_markers(api_server.artifacts, job_id) == {1: 1}


def _scrape(url: str, process: subprocess.Popen[str], timeout_s: float = 30) -> str:
    """The dispatcher's metrics, once it serves them: the jobs may all have finished (by the
    killed dispatchers) before the last one has bound its metrics port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=5).text
        except httpx.TransportError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout_s}s"
            time.sleep(0.1)


def test_sigkilled_dispatcher_processes_lose_and_duplicate_nothing(
    db: Database, database_url: str, api_server: ApiServer, tmp_path: Path,
    submit: Callable[..., str],
) -> None:
    rng = random.Random(7)
    job_ids = [submit("ok"), submit("ok"), submit("flaky", retries=1), submit("ok")]
    state_dir = tmp_path / "state"
    port = free_port()
    env = _dispatcher_env(database_url, api_server, state_dir, tmp_path, port)
    command = [sys.executable, "-m", "services.dispatcher"]
    for _ in range(4):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 2.5))
        process.kill()
        process.wait(timeout=30)
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not all(j.state.terminal for j in jobs(db, *job_ids)):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, [j.state for j in jobs(db, *job_ids)]
            time.sleep(0.2)
        metrics = _scrape(f"http://127.0.0.1:{port}/metrics", process)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0
    finished = jobs(db, *job_ids)
    assert [j.state for j in finished] == [JobState.SUCCEEDED] * 4
    assert [j.attempts for j in finished] == [1, 1, 2, 1]
    time.sleep(0.3)
    for job in finished:
        assert run_markers(api_server.artifacts, job.id) == dict.fromkeys(
            range(1, job.attempts + 1), 1), job.id
    assert "trainforge_dispatcher_last_loop_timestamp_seconds" in metrics
    promtool = subprocess.run(["promtool", "check", "metrics"], input=metrics,
                              capture_output=True, text=True, timeout=60)
    assert promtool.returncode == 0 and not (promtool.stdout + promtool.stderr).strip(), \
        promtool.stdout + promtool.stderr
