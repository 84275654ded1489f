"""A real `trainforge serve` (warm Ray, tiny jobs on this GPU-less machine's CPU), watched and
cancelled as a user would: the progress bar prints what the user must see, the job log is
plain text, and a cancel stops a job within 5 s, in Ray Train's start-up as while it trains,
its log saying where it was stopped.

One server for the module; its jobs run one after the other (one per team at a time). Each
spec asks for a GPU, so that the job says it trains on the CPU: that message comes right
after the job joined Ray, before Ray Train starts its worker.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.embedded import ServeProcess, dev_client, embedded_env
from tests.fixtures.training import tiny_spec

pytestmark = pytest.mark.slow

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
CPU_NOTICE = "but this machine has 0 GPU(s): training on the CPU"
#: From the cancel request to CANCELLED, at most.
CANCEL_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def server(serve_process: ServeProcess, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, Path]]:
    import torch

    if torch.cuda.device_count():
        pytest.skip("these specs ask for a GPU so that the job trains on the CPU and says so")
    home = tmp_path_factory.mktemp("served") / "home"
    with serve_process(embedded_env(home), home.parent / "serve.log") as url:
        yield url, home


def _spec(tiny_dataset: Path, name: str, **sections: Any) -> dict[str, Any]:
    return tiny_spec(f"file://{tiny_dataset}/", name=name,
                     resources={"gpus": 1, "cpus": 1}, **sections)


def _events(api: httpx.Client, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(f"/v1/jobs/{job}/events",
                                          params={"limit": 1000}).json()["items"]
    return items


def _until_event(api: httpx.Client, job: str, wanted: str) -> None:
    """Poll the job's events (every 50 ms) until one's reason contains ``wanted``, or
    ``wanted`` is "progress" and an epoch was reported."""
    deadline = time.monotonic() + 300
    while True:
        events = _events(api, job)
        if any(wanted in e["reason"] or (wanted == "progress" and e["type"] == "progress")
               for e in events):
            return
        assert not any(e.get("to_state") in TERMINAL for e in events), events
        assert time.monotonic() < deadline, events
        time.sleep(0.05)


def _cancel(api: httpx.Client, job: str) -> float:
    """Cancel; returns the seconds from the request until the job is CANCELLED."""
    asked = time.monotonic()
    assert api.post(f"/v1/jobs/{job}/cancel").json()["state"] == "CANCELLING"
    deadline = asked + 60
    while (state := api.get(f"/v1/jobs/{job}").json()["state"]) not in TERMINAL:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state == "CANCELLED"
    return time.monotonic() - asked


def _final_log(api: httpx.Client, job: str) -> str:
    """The job's whole log, once its run has exited (a followed log ends then)."""
    return api.get(f"/v1/jobs/{job}/logs", params={"follow": "true"}, timeout=120).text


def test_the_bar_prints_what_the_user_must_see_and_the_log_is_plain(
    server: tuple[str, Path], tiny_dataset: Path, tmp_path: Path
) -> None:
    url, home = server
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec(tiny_dataset, "watched", promote={})))
    env = {**embedded_env(home), "TRAINFORGE_URL": url}
    done = subprocess.run([sys.executable, "-m", "trainforge", "jobs", "submit", str(spec),
                           "--wait"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert CPU_NOTICE in done.stdout, done.stdout
    job = re.search(r"submitted (j[0-9a-z]+)", done.stdout).group(1)  # type: ignore[union-attr]
    assert f"promoted {job} to champion: the model's first version" in done.stdout
    assert re.search(r"SUCCEEDED .*epoch 2/2 mAP50-95 \d", done.stdout), done.stdout

    api = dev_client(url, home)
    log = _final_log(api, job)
    assert "step train:" in log and f"job {job} SUCCEEDED" in log
    assert "\x1b" not in log, "no terminal escape codes in the job log"
    assert "PreemptionWatcher" not in log, log[-3000:]


def test_a_cancel_in_ray_train_start_up_ends_the_job_within_seconds(
    server: tuple[str, Path], tiny_dataset: Path
) -> None:
    url, home = server
    api = dev_client(url, home)
    job = api.post("/v1/jobs", json={"spec": _spec(tiny_dataset, "cancel-start")}).json()["id"]
    _until_event(api, job, CPU_NOTICE)  # joined Ray; Ray Train starts its worker next
    seconds = _cancel(api, job)
    assert seconds < CANCEL_WITHIN_S, f"CANCELLED {seconds:.1f}s after the request"
    events = _events(api, job)
    cancelled_at = next(e["id"] for e in events if e.get("to_state") == "CANCELLING")
    assert not any(e["reason"].startswith("training run") and e["id"] < cancelled_at
                   for e in events), "the cancel came before the training worker started"
    assert f"job {job} cancelled (SIGTERM) in step train after" in _final_log(api, job)


def test_a_cancel_while_training_ends_the_job_within_seconds(
    server: tuple[str, Path], tiny_dataset: Path
) -> None:
    url, home = server
    api = dev_client(url, home)
    # Epochs of a few seconds (the tiny set's 64 px images trained at 192 px): long against
    # the cancel's latency, so that "at most one more epoch" is a claim about the cancel and
    # not about how loaded the machine is.
    spec = _spec(tiny_dataset, "cancel-training", train={"epochs": 30, "imgsz": 192})
    job = api.post("/v1/jobs", json={"spec": spec}).json()["id"]
    _until_event(api, job, "progress")
    seconds = _cancel(api, job)
    assert seconds < CANCEL_WITHIN_S, f"CANCELLED {seconds:.1f}s after the request"
    events = _events(api, job)
    cancelled_at = next(e["id"] for e in events if e.get("to_state") == "CANCELLING")
    late = [e["data"]["epoch"] for e in events if e["type"] == "progress"
            and e["id"] > cancelled_at]
    assert len(late) <= 1, f"epochs {late} reported after the cancel request"
    log = _final_log(api, job)
    assert f"job {job} cancelled (SIGTERM) in step train after" in log
    assert "step train: stopped after" in log
