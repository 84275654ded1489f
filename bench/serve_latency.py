"""Submit → first epoch through the API of the embedded server (`trainforge serve`).

Starts `trainforge serve` (SQLite, local store, local backend, its warm Ray head) on a free
port with a fresh home, then submits the same small training job ``--jobs`` times, one after
the other, through ``POST /v1/jobs``. For each job it prints the time from the POST to the job
being RUNNING, to its first finished epoch (its first progress event), and to SUCCEEDED, from
the events' own timestamps. The first job pays the head's start (cold); the others find it
warm. ``--cold`` runs the same with TRAINFORGE_DISPATCHER_WARM_RAY=false (every job starts a
Ray of its own), for the comparison in one run.

Usage: python bench/serve_latency.py [--jobs 4] [--epochs 2] [--cold] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _smoke import add_plots_option, parse_args  # noqa: E402
from _trainjobs import free_port, start_serve, wait_for_end, wait_ready  # noqa: E402

#: What a run prints for its figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"warm Ray, median of jobs [\d-]+: submit -> first epoch \d+\.\ds, "
                     r"-> done \d+\.\ds",)


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def run(warm: bool, args: argparse.Namespace, dataset: Path, work: Path) -> list[dict[str, float]]:
    home = work / ("home-warm" if warm else "home-cold")
    home.mkdir(parents=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_serve(home, port, home.parent / f"serve-{'warm' if warm else 'cold'}.log",
                         TRAINFORGE_DISPATCHER_POLL_INTERVAL_S="0.2",
                         TRAINFORGE_DISPATCHER_WARM_RAY="true" if warm else "false")
    rows = []
    try:
        wait_ready(url, server)
        token = (home / "dev-token").read_text().strip()
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        spec = {"name": "latency", "dataset": {"uri": f"file://{dataset}/"},
                "model": {"base": "yolov8n.yaml"}, "retries": 0,
                "resources": {"gpus": 0, "cpus": os.cpu_count() or 1},
                "train": {"epochs": args.epochs, "imgsz": args.imgsz, "batch": 16,
                          "workers": 0, "warmup_epochs": 0, "optimizer": "SGD", "lr0": 0.02,
                          "plots": args.plots}}
        for i in range(args.jobs):
            submitted = time.time()
            job = client.post("/v1/jobs", json={"spec": spec}).json()["id"]
            state = wait_for_end(client, job)
            if state != "SUCCEEDED":
                raise RuntimeError(f"job {job} ended {state}; see {home.parent} (serve-*.log, "
                                   "the job's log under home-*/)")
            events = client.get(f"/v1/jobs/{job}/events", params={"limit": 500}).json()["items"]
            running = next(_at(e) for e in events if e.get("to_state") == "RUNNING")
            first_epoch = next(_at(e) for e in events if e["type"] == "progress")
            done = next(_at(e) for e in events if e.get("to_state") in (
                "SUCCEEDED", "FAILED", "CANCELLED"))
            rows.append({"running": running - submitted, "first_epoch": first_epoch - submitted,
                         "done": done - submitted})
            print(f"{'warm' if warm else 'cold'} job {i + 1}: submit -> RUNNING "
                  f"{rows[-1]['running']:.1f}s, -> first epoch {rows[-1]['first_epoch']:.1f}s, "
                  f"-> done {rows[-1]['done']:.1f}s", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--cold", action="store_true",
                        help="also run with TRAINFORGE_DISPATCHER_WARM_RAY=false")
    add_plots_option(parser)
    args = parse_args(parser, jobs=1, epochs=1, imgsz=64, train=8, plots=False)

    from trainforge.datasets import synth

    work = Path(tempfile.mkdtemp(prefix="tf-serve-latency-"))
    dataset = synth(work / "data" / "shapes", train=args.train, val=16, test=16,
                    imgsz=args.imgsz)
    modes = [True, False] if args.cold else [True]
    for warm in modes:
        rows = run(warm, args, dataset, work)
        later = rows[1:] or rows  # the first job pays the head's start
        print(f"{'warm' if warm else 'cold'} Ray, median of jobs "
              f"{len(rows) - len(later) + 1}-{len(rows)}: "
              f"submit -> first epoch {statistics.median(r['first_epoch'] for r in later):.1f}s, "
              f"-> done {statistics.median(r['done'] for r in later):.1f}s; first job: "
              f"{rows[0]['first_epoch']:.1f}s / {rows[0]['done']:.1f}s", flush=True)
    print(f"work dir {work}")


if __name__ == "__main__":
    main()
