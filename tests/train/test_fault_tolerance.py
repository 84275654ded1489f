"""A training worker killed mid-run: Ray restarts it and it resumes from the last checkpoint;
a whole attempt killed mid-run: the dispatcher's next attempt resumes instead. Both count
against the job's one budget of runs (retries + 1).

Processes are really killed (SIGKILL from outside) right after the job reports epoch 2 of 5:
the worker's pid comes from its "training worker started" MessageEvent.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fixtures.training import TEAM, JobRunner, RayHead, RecordingAPI, tiny_spec
from tests.train.support import KillAfterEpoch, explain
from trainforge import layout

pytestmark = pytest.mark.slow


def _results_epochs(tmp_path: Path, job: str) -> list[int]:
    path = tmp_path / "artifacts" / layout.train_output_prefix(job) / "results.csv"
    with path.open() as fh:
        return [int(float(row["epoch"])) for row in csv.DictReader(fh)]


def _spec(dataset: Path, retries: int) -> dict[str, Any]:
    return tiny_spec(f"file://{dataset}", train={"epochs": 5}, retries=retries)


def test_killed_worker_is_restarted_by_ray_and_resumes_at_the_next_epoch(
    cluster_runner: JobRunner, recording_api: RecordingAPI, tiny_dataset: Path, tmp_path: Path,
    ray_head: RayHead,
) -> None:
    job = "job-kill"
    killer = KillAfterEpoch(recording_api, job, epoch=2)
    recording_api.on_event = killer
    run = cluster_runner.run(job, _spec(tiny_dataset, retries=2))

    assert killer.killed, f"no kill after epoch 2; {explain(run.output, ray_head)}"
    assert run.returncode == 0, run.output[-5000:]
    assert recording_api.final_state(job)["state"] == "SUCCEEDED"
    workers = {m["data"]["pid"] for m in recording_api.message(job, "training worker started")}
    assert len(workers) == 2 and killer.killed[0] in workers, "Ray started a second worker"
    # Ray Train's restart counts against the job's one budget of runs (retries + 1).
    runs = recording_api.message(job, "training run")
    assert [(m["data"]["run"], m["data"]["max_runs"]) for m in runs] == [(1, 3), (2, 3)]
    [resumed] = recording_api.message(job, "resuming from epoch")
    assert resumed["data"]["resumed_epoch"] == 3
    # Every epoch trained once: the restart lost at most the epoch in flight, repeated none.
    assert recording_api.epochs(job) == [1, 2, 3, 4, 5]
    assert _results_epochs(tmp_path, job) == [1, 2, 3, 4, 5]
    report = json.loads((tmp_path / "artifacts" / layout.train_output_prefix(job) /
                         "report.json").read_text())
    assert report["training"]["resumed_at_epoch"] == 3
    assert list((tmp_path / "models" / TEAM / "shapes").glob("*/manifest.json"))


def test_a_killed_attempt_fails_and_the_next_attempt_resumes(
    cluster_runner: JobRunner, recording_api: RecordingAPI, tiny_dataset: Path, tmp_path: Path,
    ray_head: RayHead,
) -> None:
    """The whole attempt dies (its entrypoint, the Ray job driver, is killed: a lost node, an
    evicted pod), so Ray Train cannot restart the worker; the dispatcher's next attempt, with
    the one run the budget has left (retries: 1), resumes from the checkpoint."""
    job = "job-noretry"
    proc = cluster_runner.start(job, _spec(tiny_dataset, retries=1), attempt=1)
    killer = KillAfterEpoch(recording_api, job, epoch=2, pid=lambda: proc.pid)
    recording_api.on_event = killer
    output, _ = proc.communicate(timeout=600)

    assert killer.killed, f"no kill after epoch 2; {explain(output, ray_head)}"
    assert proc.returncode == -signal.SIGKILL, output[-5000:]
    assert not (tmp_path / "models").exists() or \
        not list((tmp_path / "models").glob("*/*/*/manifest.json")), "nothing published"
    assert (tmp_path / "artifacts" / layout.checkpoint_key(job)).is_file()
    # Ray ends a dead driver's workers; wait for it, so nothing of attempt 1 trains on.
    psutil.Process(killer._worker_pid()).wait(timeout=120)

    # The dispatcher launches attempt 2 of the same job: it continues from epoch 3.
    recording_api.on_event = None
    second = cluster_runner.run(job, _spec(tiny_dataset, retries=1), attempt=2)
    assert second.returncode == 0, second.output[-5000:]
    attempt2 = [e for e in recording_api.of(job, "progress") if e["attempt"] == 2]
    assert [e["epoch"] for e in attempt2] == [3, 4, 5]
    runs = recording_api.message(job, "training run")
    assert [(m["data"]["run"], m["data"]["max_runs"]) for m in runs] == [(1, 2), (2, 2)]
    assert _results_epochs(tmp_path, job) == [1, 2, 3, 4, 5]
    assert (tmp_path / "artifacts" / layout.attempt_log_key(job, 2)).is_file()
    manifest = tmp_path / "models" / TEAM / "shapes" / job / "manifest.json"
    published = manifest.read_bytes()

    # Attempt 3 (as after a crash once training was done): no epoch is trained again, and
    # the published version is left as it was.
    third = cluster_runner.run(job, _spec(tiny_dataset, retries=1), attempt=3)
    assert third.returncode == 0, third.output[-5000:]
    assert [e for e in recording_api.of(job, "progress") if e["attempt"] == 3] == []
    assert "all 5 epochs were done by an earlier try" in third.output
    assert "(already there)" in third.output
    assert manifest.read_bytes() == published
