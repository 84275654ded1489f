"""`trainforge serve` keeps one warm Ray head for its jobs, and stops it when it stops.

A real server, real training jobs (tiny: 2 epochs at 64 px on CPU), and a spec without a
resources section (one GPU by default) on this GPU-less machine: the first job starts the
head, the second joins the same one, both train on the CPU and say so, and once the server is
terminated none of the head's processes is left.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.embedded import ServeProcess, dev_client, embedded_env
from tests.fixtures.training import make_dataset

pytestmark = pytest.mark.slow


def _head_processes(session_root: Path) -> list[psutil.Process]:
    """Processes of the head whose sessions live under ``session_root``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(session_root) in cmdline:
            found.append(proc)
    return found


def test_jobs_share_one_warm_ray_head_that_stops_with_the_server(
        serve_process: ServeProcess, tmp_path: Path) -> None:
    import torch

    if torch.cuda.device_count():
        pytest.skip("this test trains a default (1-GPU) spec on a machine without a GPU")
    home = tmp_path / "home"
    dataset = make_dataset(tmp_path / "data" / "shapes", train=16, val=4, test=4)
    log_path = tmp_path / "serve.log"
    with serve_process(embedded_env(home), log_path) as url:
        client = dev_client(url, home)
        spec = {"name": "shapes", "dataset": {"uri": f"file://{dataset}/"},
                "model": {"base": "yolov8n.yaml"}, "retries": 0,
                "train": {"epochs": 2, "imgsz": 64, "batch": 8, "workers": 0,
                          "warmup_epochs": 0, "optimizer": "SGD", "lr0": 0.02, "amp": False,
                          "plots": False}}
        for _ in range(2):  # one after the other: the second finds the head warm
            job = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
            deadline = time.monotonic() + 600
            while (state := client.get(f"/v1/jobs/{job}").json()["state"]) not in (
                    "SUCCEEDED", "FAILED", "CANCELLED"):
                assert time.monotonic() < deadline, log_path.read_text()[-5000:]
                time.sleep(1)
            job_log = client.get(f"/v1/jobs/{job}/logs").text
            assert state == "SUCCEEDED", job_log[-5000:]
            assert "step ray-connect: the embedded server's Ray at 127.0.0.1:" in job_log
            # Rank 0's per-epoch events come from a Ray worker, with the token the job got
            # through the store (never through the head's runtime_env): they were accepted.
            assert client.get(f"/v1/jobs/{job}").json()["progress"] == {"epoch": 2, "epochs": 2}
            events = client.get(f"/v1/jobs/{job}/events").json()["items"]
            assert any("but this machine has 0 GPU(s): training on the CPU" in e["reason"]
                       for e in events), events
        heads = re.findall(r"local Ray head at (\S+) in", log_path.read_text())
        assert len(heads) == 1, log_path.read_text()[-3000:]
        session_logs = home / "ray" / "session_latest" / "logs"
        assert (session_logs / "raylet.out").is_file()
        session_root = (home / "ray").resolve()
        assert _head_processes(session_root), "the head runs while the server does"
    # It stops with the server: no draining of its processes one by one (up to 30 s).
    deadline = time.monotonic() + 10
    while left := _head_processes(session_root):
        assert time.monotonic() < deadline, [p.info["cmdline"][:3] for p in left]
        time.sleep(1)
