"""Cancel → CANCELLED on the embedded server (`trainforge serve`), as a user sees it.

Starts `trainforge serve` with a fresh home and its own defaults (dispatcher loop every 2 s,
the warm Ray head), warms the head with one short job, then cancels training jobs at two
moments, ``--runs`` times each:

- **start-up**: as soon as the job says it trains on the CPU (the message it posts right after
  joining Ray, before Ray Train starts its worker), i.e. during Ray Train's start-up;
- **training**: as soon as its first epoch is reported (``--epochs`` is large enough that it
  is still training).

For each cancel it prints the time from the ``POST /v1/jobs/{id}/cancel`` to the job being
CANCELLED (measured by the client, polling every 50 ms), and how many epochs the job reported
after the cancel request. The spec asks for the default GPU, so on this GPU-less machine the
job trains on the CPU and says so (the start-up moment).

Usage: python bench/cancel_latency.py [--runs 3] [--epochs 30] [--smoke]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _smoke import add_plots_option, parse_args  # noqa: E402
from _trainjobs import TERMINAL, free_port, start_serve, wait_for_end, wait_ready  # noqa: E402

#: What a run prints for its figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"during Ray Train start-up: median \d+\.\d\ds, max \d+\.\d\ds to CANCELLED",
                     r"while training: median \d+\.\d\ds, max \d+\.\d\ds to CANCELLED")


def _events(client: httpx.Client, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.get(f"/v1/jobs/{job}/events",
                                             params={"limit": 1000}).json()["items"]
    return items


def _until(client: httpx.Client, job: str, moment: str, timeout_s: float = 600) -> None:
    """Poll the job's events until ``moment`` ("cpu" notice, or first "epoch")."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in _events(client, job):
            if moment == "cpu" and "training on the CPU" in event["reason"]:
                return
            if moment == "epoch" and event["type"] == "progress":
                return
            if event.get("to_state") in TERMINAL:
                raise RuntimeError(f"job {job} ended before {moment}: {event['reason']}")
        time.sleep(0.05)
    raise RuntimeError(f"job {job}: no {moment} within {timeout_s}s")


def cancel_at(client: httpx.Client, spec: dict[str, Any], moment: str) -> tuple[float, int]:
    """Submit, cancel at ``moment``; returns (seconds to CANCELLED, epochs reported after)."""
    job = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
    _until(client, job, moment)
    asked = time.monotonic()
    cancelling = client.post(f"/v1/jobs/{job}/cancel").json()
    state = wait_for_end(client, job, timeout_s=600, poll_s=0.05)
    seconds = time.monotonic() - asked
    if state != "CANCELLED":
        raise RuntimeError(f"job {job} ended {state}, not CANCELLED")
    events = _events(client, job)
    request = next(e["id"] for e in events if e.get("to_state") == "CANCELLING")
    after = sum(1 for e in events if e["type"] == "progress" and e["id"] > request)
    print(f"cancel at {moment:<5} job {job} ({cancelling['state']}): CANCELLED after "
          f"{seconds:.2f}s, {after} epoch(s) reported after the request", flush=True)
    return seconds, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30,
                        help="per job: enough to be still training when cancelled")
    parser.add_argument("--train", type=int, default=32, help="training images")
    # Cancelled after the first epoch: many epochs only make sure it is still training then.
    add_plots_option(parser)
    args = parse_args(parser, runs=1, train=8, epochs=100, plots=False)

    from trainforge.datasets import synth

    work = Path(tempfile.mkdtemp(prefix="tf-cancel-latency-"))
    dataset = synth(work / "data" / "shapes", train=args.train, val=8, test=8, imgsz=64)
    home = work / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_serve(home, port, work / "serve.log")  # its defaults: a loop every 2 s
    try:
        wait_ready(url, server)
        token = (home / "dev-token").read_text().strip()
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        spec: dict[str, Any] = {
            "name": "cancel", "dataset": {"uri": f"file://{dataset}/"},
            "model": {"base": "yolov8n.yaml"}, "retries": 0,
            "train": {"epochs": args.epochs, "imgsz": 64, "batch": 16, "workers": 0,
                      "warmup_epochs": 0, "optimizer": "SGD", "lr0": 0.02, "amp": False,
                      "plots": args.plots}}
        cancel_at(client, spec, "epoch")  # warms the Ray head: not counted
        rows: dict[str, list[tuple[float, int]]] = {"cpu": [], "epoch": []}
        for _ in range(args.runs):
            for moment in rows:
                rows[moment].append(cancel_at(client, spec, moment))
        for moment, label in (("cpu", "during Ray Train start-up"), ("epoch", "while training")):
            seconds = [s for s, _ in rows[moment]]
            print(f"{label}: median {statistics.median(seconds):.2f}s, max {max(seconds):.2f}s "
                  f"to CANCELLED; epochs after the request: {[n for _, n in rows[moment]]}",
                  flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    print(f"work dir {work}")


if __name__ == "__main__":
    main()
