"""RayJobsBackend against a real ``ray start --head`` (Jobs API through its dashboard)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from services.dispatcher.backends.base import (
    TIMED_OUT,
    BackendState,
    BackendStatus,
    LaunchRequest,
)
from services.dispatcher.backends.ray_jobs import RayJobsBackend, backend_state, submission_id
from tests.fixtures.training import TEAM, JobRunner, RayHead, RecordingAPI, make_dataset, tiny_spec
from trainforge.layout import attempt_secrets_key
from trainforge.spec import JobKind, Resources
from trainforge.storage import join_key, open_location


def test_every_ray_job_status_has_a_backend_state() -> None:
    from ray.job_submission import JobStatus

    assert {s.value: backend_state(s) for s in JobStatus} == {
        "PENDING": BackendState.PENDING, "RUNNING": BackendState.RUNNING,
        "SUCCEEDED": BackendState.SUCCEEDED, "FAILED": BackendState.FAILED,
        "STOPPED": BackendState.STOPPED,
    }
    assert backend_state("SOMETHING_NEW") is BackendState.UNKNOWN


def test_each_attempt_has_its_own_submission_id() -> None:
    assert submission_id("j1", 1) == "j1"
    assert submission_id("j1", 2) == "j1-attempt-2"


def _request(runner: JobRunner, job_id: str, spec: dict[str, object],
             attempt: int = 1) -> LaunchRequest:
    """What the dispatcher hands a backend whose job settings others can read: no token in
    them, but the store object holding it (services/dispatcher/dispatcher.py)."""
    spec_uri = runner.write_spec(job_id, spec)
    store, base = open_location(runner.artifacts_uri.rstrip("/") + "/")
    secrets_key = join_key(base, attempt_secrets_key(job_id, attempt))
    store.put(secrets_key, json.dumps({"TRAINFORGE_JOB_TOKEN": f"token-{job_id}"}).encode())
    return LaunchRequest(
        job_id=job_id, kind=JobKind.TRAIN, spec_uri=spec_uri, attempt=attempt,
        resources=Resources(gpus=0, cpus=1), retries=0, timeout_s=1800, team=TEAM,
        env={
            "TRAINFORGE_API_URL": runner.api.url, "TRAINFORGE_JOB_ID": job_id,
            "TRAINFORGE_JOB_SECRETS_URI": store.uri(secrets_key),
            "TRAINFORGE_ATTEMPT": str(attempt), "TRAINFORGE_JOB_TEAM": TEAM,
            "TRAINFORGE_JOB_ACCESS": runner.access_env(),
            "TRAINFORGE_SPEC_SHA256": runner.spec_sha256(job_id),
            "TRAINFORGE_ARTIFACTS_URI": runner.artifacts_uri,
            "TRAINFORGE_MODELS_URI": runner.models_uri,
            "TRAINFORGE_HOME": str(runner.home), "YOLO_OFFLINE": "1",
        },
    )


def _wait(probe: Callable[[], BackendStatus], done: Callable[[BackendStatus], bool],
          timeout: float = 300) -> BackendStatus:
    deadline = time.monotonic() + timeout
    status = probe()
    while not done(status) and time.monotonic() < deadline:
        time.sleep(1)
        status = probe()
    return status


@pytest.fixture()
def backend(ray_head: RayHead) -> RayJobsBackend:
    return RayJobsBackend(ray_head.dashboard_url)


@pytest.fixture()
def runner(tmp_path: Path, recording_api: RecordingAPI) -> JobRunner:
    return JobRunner(home=tmp_path / "home", artifacts_uri=f"file://{tmp_path}/artifacts",
                     models_uri=f"file://{tmp_path}/models", api=recording_api)


def test_a_failing_job_is_reported_failed_with_its_logs(
    backend: RayJobsBackend, runner: JobRunner, tmp_path: Path
) -> None:
    dataset = make_dataset(tmp_path / "ds", train=4, val=2, test=2)
    (dataset / "val" / "labels" / "val_00000.txt").write_text("0 1.5 0.5 0.1 0.1\n")
    request = _request(runner, "rj-fail", tiny_spec(f"file://{dataset}"))

    handle = backend.launch(request)
    assert backend.launch(request) == handle, "a resubmit is idempotent"
    assert [j for j in backend.client.list_jobs() if j.submission_id == handle] != []
    assert len([j for j in backend.client.list_jobs() if j.submission_id == handle]) == 1

    status = _wait(lambda: backend.poll(handle), lambda s: s.state in {
        BackendState.SUCCEEDED, BackendState.FAILED, BackendState.STOPPED})
    assert status.state is BackendState.FAILED, backend.logs(handle)[-3000:]
    logs = backend.logs(handle)
    assert "dataset_invalid" in logs and "val_00000.txt" in logs
    # The env reached the job through runtime_env, and its token through the store (never in
    # the Ray job's settings): it reported to the API with it.
    info = backend.client.get_job_info(handle)
    assert "token-rj-fail" not in json.dumps(info.runtime_env)
    final = runner.api.final_state("rj-fail")
    assert (final["state"], final["error_code"]) == ("FAILED", "dataset_invalid")
    assert runner.api.tokens["rj-fail"] == {"Bearer token-rj-fail"}


def test_cancel_stops_a_running_training_job(
    backend: RayJobsBackend, runner: JobRunner, tiny_dataset: Path
) -> None:
    spec = tiny_spec(f"file://{tiny_dataset}", train={"epochs": 200})
    handle = backend.launch(_request(runner, "rj-cancel", spec))
    deadline = time.monotonic() + 300
    while not runner.api.message("rj-cancel", "training worker started"):
        assert time.monotonic() < deadline, backend.logs(handle)[-3000:]
        assert backend.poll(handle).state in {BackendState.PENDING, BackendState.RUNNING}, \
            backend.logs(handle)[-3000:]
        time.sleep(1)
    worker = psutil.Process(int(runner.api.message("rj-cancel", "training worker started")[0]
                                ["data"]["pid"]))
    assert backend.poll(handle).state is BackendState.RUNNING

    backend.cancel(handle)
    status = _wait(lambda: backend.poll(handle), lambda s: s.state is not BackendState.RUNNING,
                   timeout=120)
    assert status.state is BackendState.STOPPED
    assert "FAILED" not in runner.api.states("rj-cancel"), "a cancelled job does not claim failure"
    # The training worker goes with its job: the cluster's CPUs/GPUs are free again.
    worker.wait(timeout=120)
    backend.cancel(handle)  # cancelling a stopped job is not an error


def test_unknown_handles(backend: RayJobsBackend) -> None:
    assert backend.poll("no-such-job").state is BackendState.UNKNOWN
    assert backend.logs("no-such-job") == ""
    backend.cancel("no-such-job")


@dataclasses.dataclass(frozen=True)
class _StuckRequest(LaunchRequest):
    """A launch whose entrypoint prints a line and then sleeps: a run stuck past its timeout."""

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-c",
                "import time; print('stuck-run started', flush=True); time.sleep(600)"]


def test_a_job_past_its_timeout_is_stopped_and_fails_with_its_output(
    backend: RayJobsBackend, runner: JobRunner
) -> None:
    request = dataclasses.replace(_request(runner, "rj-stuck", {"kind": "train"}), timeout_s=4)
    handle = backend.launch(_StuckRequest(**{f.name: getattr(request, f.name)
                                             for f in dataclasses.fields(request)}))
    status = _wait(lambda: backend.poll(handle), lambda s: s.state not in {
        BackendState.PENDING, BackendState.RUNNING}, timeout=120)
    assert (status.state, status.message) == (BackendState.FAILED, TIMED_OUT), \
        backend.logs(handle)[-3000:]
    # The Ray job itself was stopped (not left sleeping), and later polls keep the verdict.
    stopped = _wait(lambda: BackendStatus(backend_state(backend.client.get_job_info(
        handle).status)), lambda s: s.state is BackendState.STOPPED, timeout=60)
    assert stopped.state is BackendState.STOPPED
    assert backend.poll(handle) == BackendStatus(BackendState.FAILED, TIMED_OUT)
    assert "stuck-run started" in backend.logs(handle)
    info = backend.client.get_job_info(handle)
    assert (info.end_time - info.start_time) / 1000 < 60, "stopped near its deadline"
