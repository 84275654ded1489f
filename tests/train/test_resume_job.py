"""A failed training job resumed to more epochs, end to end: `trainforge serve`, real training.

A tiny job (3 epochs at 64 px on the CPU, no retries) loses its training worker (SIGKILL from
outside) as soon as it reports epoch 1, so it fails with a checkpoint after epoch 1 (or 2, if
that epoch ended before the kill landed: the test reads where it stopped). `trainforge jobs
resume JOB --epochs 4 --wait` then submits a new job that continues that checkpoint: it trains
only the epochs after it, up to the new total, and says so in its events and report.json.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.embedded import ServeProcess, dev_client, embedded_env
from tests.fixtures.training import tiny_spec

pytestmark = pytest.mark.slow

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


def _kill_worker_after_epoch(client: httpx.Client, job_id: str, epoch: int,
                             timeout_s: float = 300) -> None:
    """SIGKILL the job's training worker once the job has reported ``epoch``."""
    deadline = time.monotonic() + timeout_s
    pid, after = None, 0
    while True:
        page = client.get(f"/v1/jobs/{job_id}/events", params={"after": after}).json()
        for event in page["items"]:
            if event["type"] == "message" and event["reason"] == "training worker started":
                pid = int(event["data"]["pid"])
            elif event["type"] == "progress" and event["data"]["epoch"] >= epoch:
                assert pid is not None, "a progress event before the worker announced itself"
                os.kill(pid, signal.SIGKILL)
                return
            elif event["type"] == "state" and event["to_state"] in TERMINAL:
                raise AssertionError(f"job {job_id} ended before epoch {epoch}: {event}")
        after = page["next_after"]
        assert time.monotonic() < deadline, f"job {job_id} did not reach epoch {epoch}"
        time.sleep(0.05)


def _finished(client: httpx.Client, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] not in TERMINAL:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return dict(job)


def test_a_failed_job_resumes_from_its_checkpoint_to_more_epochs(
    serve_process: ServeProcess, tmp_path: Path, tiny_dataset: Path
) -> None:
    home = tmp_path / "home"
    env = embedded_env(home)
    with serve_process(env, tmp_path / "serve.log") as url:
        client = dev_client(url, home)
        spec = tiny_spec(f"file://{tiny_dataset}/", train={"epochs": 3})
        old = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
        _kill_worker_after_epoch(client, old, epoch=1)
        stopped = _finished(client, old)
        assert stopped["state"] == "FAILED", stopped
        trained = stopped["progress"]["epoch"]
        assert 1 <= trained < 3, stopped

        cli_env = {**env, "TRAINFORGE_URL": url,
                   "TRAINFORGE_TOKEN": (home / "dev-token").read_text().strip()}
        done = subprocess.run(
            [sys.executable, "-m", "trainforge", "jobs", "resume", old, "--epochs", "4",
             "--wait"], env=cli_env, text=True, capture_output=True, timeout=600)
        output = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
        found = re.search(rf"resumed {old} as (j[0-9a-z]+) \(train shapes\): QUEUED, "
                          rf"continuing after epoch {trained} of 4", output)
        assert found, output
        new = found.group(1)
        assert done.returncode == 0, output + client.get(f"/v1/jobs/{new}/logs").text[-5000:]
        assert f"{new} SUCCEEDED" in output

        job = client.get(f"/v1/jobs/{new}").json()
        assert job["resumed_from"] == old and job["progress"] == {"epoch": 4, "epochs": 4}
        events = client.get(f"/v1/jobs/{new}/events", params={"limit": 1000}).json()["items"]
        assert events[0]["reason"] == f"resumed from job {old}"
        # It trained only the epochs after the checkpoint, to the new total.
        assert [(e["data"]["epoch"], e["data"]["epochs"]) for e in events
                if e["type"] == "progress"] == [(n, 4) for n in range(trained + 1, 5)]
        messages = [e["reason"] for e in events if e["type"] == "message"]
        assert f"resuming from epoch {trained + 1}" in messages, messages
        assert any(m.startswith("training to 4 epochs instead of the 3 the checkpoint's run "
                                "was asked for") for m in messages), messages
        artifacts = {a["name"]: a["url"] for a in
                     client.get(f"/v1/jobs/{new}/artifacts").json()["items"]}
        report = httpx.get(artifacts["train/report.json"], timeout=30).json()
        assert report["training"]["resumed_at_epoch"] == trained + 1
        assert report["training"]["epochs_requested"] == 4
        assert report["training"]["epochs_completed"] == 4  # the stopped job's rows and its own
        assert report["training"]["hyperparameters"]["epochs"] == 4

        # The model is published; the job it resumed cannot be resumed a second time.
        again = subprocess.run([sys.executable, "-m", "trainforge", "jobs", "resume", old],
                               env=cli_env, text=True, capture_output=True, timeout=120)
        assert again.returncode == 1
        assert f"already resumed as job {new}" in " ".join(again.stdout.split())
