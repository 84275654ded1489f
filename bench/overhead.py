"""What trainforge costs on top of Ultralytics: wall time and time to RUNNING.

The same 5-epoch training runs through trainforge (``python -m jobs.train`` as the local
backend launches it, dataset already in the node cache) and through the stock ``yolo train``
CLI with identical arguments on the same local data.yaml; runs alternate (tf, yolo, tf, …).
Both sides get the same batch, imgsz, workers and device, a private Ultralytics config dir
with a font (so neither touches the network), and Ultralytics' own torch thread settings.

Printed: each run's wall time, the ratio of medians (target <= 1.25), the ratio for the
training step alone, trainforge's per-step times, and entrypoint start -> first RUNNING
StateEvent latency (target p50 <= 2 s). Without the API and dispatcher this measures from the
entrypoint's process start, not from POST /v1/jobs.

With ``--warm-ray`` the jobs join one local Ray head started before the first round, as
under ``trainforge serve`` (the head's start is not counted, as a server's is paid once).

Usage: python bench/overhead.py [--rounds 2] [--latency-samples 8] [--ray-address HOST:PORT]
                                [--warm-ray] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import add_plots_option, parse_args  # noqa: E402
from _trainjobs import EventRecorder, run_job, start_job, team_cache  # noqa: E402

from jobs.core import steps as job_steps  # noqa: E402

#: What a run prints for its figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"wall time, median of \d+: .* -> ratio \d+\.\d{3}",
                     r"training step inside trainforge / yolo train: \d+\.\d{3}",
                     r"trainforge steps \(median s\): .*ray-connect \d+\.\d\d",
                     r"entrypoint start -> RUNNING event \(n=\d+\): p50 \d+\.\d\ds")

#: A job step's outcome line (jobs/core/steps.py), named by the steps logger itself so that a
#: rename cannot silently empty the per-step figures.
STEP_LINE = re.compile(re.escape(job_steps.log.name) + r": step ([\w-]+): .*\(([\d.]+)s\)$")


def spec(dataset: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "kind": "train",
        "name": "overhead",
        "dataset": {"uri": f"file://{dataset}"},
        "model": {"base": "yolov8n.yaml"},
        "train": {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                  "optimizer": "SGD", "lr0": 0.02, "warmup_epochs": 0, "workers": 0,
                  "seed": 0, "plots": args.plots},
        "resources": {"gpus": 0, "cpus": os.cpu_count() or 1},
        "retries": 0,
    }


def stock_command(job_spec: dict[str, Any], data_yaml: Path, run_dir: Path) -> list[str]:
    """``yolo train`` with exactly the arguments trainforge's adapter gives the trainer."""
    from jobs.core import adapter
    from trainforge.spec import TrainParams

    overrides = adapter.train_overrides(
        TrainParams.model_validate(job_spec["train"]), data_yaml=data_yaml,
        model=job_spec["model"]["base"], run_dir=run_dir, device="cpu")
    overrides.pop("save_dir")  # the CLI names the run with project/name instead
    yolo = str(Path(sys.executable).parent / "yolo")
    return [yolo, "train", *(f"{k}={v}" for k, v in overrides.items())]


def steps(log: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in log.read_text().splitlines():
        match = STEP_LINE.search(line)
        if match and "pid=" not in line:  # the entrypoint's own steps, not a Ray worker's
            out[match.group(1)] = float(match.group(2))
    return out


def worker_train_seconds(log: Path) -> float:
    for line in log.read_text().splitlines():
        if "RayTrainWorker" in line and "step train:" in line:
            match = re.search(r"\(([\d.]+)s\)", line)
            if match:
                return float(match.group(1))
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--train", type=int, default=128)
    parser.add_argument("--latency-samples", type=int, default=8)
    parser.add_argument("--ray-address", default=None,
                        help="run trainforge's jobs on this Ray cluster instead of a local one")
    parser.add_argument("--warm-ray", action="store_true",
                        help="run the jobs on one warm local Ray head, as `trainforge serve` "
                        "does (services/dispatcher/local_ray.py)")
    parser.add_argument("--workdir", type=Path, default=None)
    add_plots_option(parser)
    args = parse_args(parser, rounds=1, latency_samples=1, epochs=1, imgsz=64, train=8, batch=8,
                      plots=False)

    from jobs.core import adapter, dataset_step
    from trainforge.datasets import synth

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tf-overhead-"))
    home = work / "home"
    dataset = synth(work / "shapes", train=args.train, val=32, test=32, imgsz=args.imgsz)
    # The local backend path with the dataset already cached on this node.
    cached = dataset_step.sync(f"file://{dataset}", team_cache(home))
    data_yaml = dataset_step.write_local_data_yaml(cached.path, work / "stock" / "data.yaml")
    stock_config = work / "stock" / "ultralytics"
    adapter.prepare_environment(stock_config)  # the same private config dir + font
    job_spec = spec(dataset, args)
    extra = {"RAY_ADDRESS": args.ray_address} if args.ray_address else {}
    head = None
    if args.warm_ray:
        from services.dispatcher.local_ray import LocalRayHead

        head = LocalRayHead(home, num_cpus=max(os.cpu_count() or 1, 8))
        extra = {**head.job_env(), "TRAINFORGE_LOCAL_RAY": "1"}  # started before the rounds
    api = EventRecorder().start()

    tf_walls: list[float] = []
    tf_train: list[float] = []
    yolo_walls: list[float] = []
    latencies: list[float] = []
    step_times: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        job = f"overhead-{round_}"
        started = time.monotonic()
        tf_walls.append(run_job(home, api.url, job, job_spec, **extra))
        running = api.first(job, "state", "RUNNING", timeout=0)
        if running is not None:
            latencies.append(running - started)
        log = home / "artifacts" / "jobs" / job / "attempts" / "1" / "log.txt"
        step_times.append(steps(log))
        tf_train.append(worker_train_seconds(log))

        run_dir = work / "stock" / f"run{round_}"
        shutil.rmtree(run_dir, ignore_errors=True)
        # As from a user's shell: without the weights-only switch trainforge's loader sets in
        # the processes it hardens (stock Ultralytics reloads its own best.pt the old way).
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")},
               "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(stock_config)}
        t0 = time.perf_counter()
        stock = subprocess.run(stock_command(job_spec, data_yaml, run_dir), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if stock.returncode != 0:
            sys.exit(f"yolo train exited {stock.returncode}:\n{stock.stdout[-4000:]}")
        yolo_walls.append(time.perf_counter() - t0)
        print(f"round {round_ + 1}: trainforge {tf_walls[-1]:.1f}s "
              f"(Ultralytics inside: {tf_train[-1]:.1f}s), yolo train {yolo_walls[-1]:.1f}s",
              flush=True)

    for i in range(args.latency_samples):
        job = f"latency-{i}"
        started = time.monotonic()
        proc = start_job(home, api.url, job, job_spec, **extra)
        running = api.first(job, "state", "RUNNING", timeout=120)
        if running is not None:
            latencies.append(running - started)
        proc.send_signal(signal.SIGTERM)  # what a cancel does; only the latency matters here
        proc.wait(timeout=120)

    ratio = statistics.median(tf_walls) / statistics.median(yolo_walls)
    train_ratio = statistics.median(tf_train) / statistics.median(yolo_walls)
    print(f"wall time, median of {args.rounds}: trainforge {statistics.median(tf_walls):.1f}s, "
          f"yolo train {statistics.median(yolo_walls):.1f}s -> ratio {ratio:.3f} "
          f"(target <= 1.25: {'met' if ratio <= 1.25 else 'MISSED'})")
    print(f"training step inside trainforge / yolo train: {train_ratio:.3f}")
    names = sorted({k for s in step_times for k in s})
    print("trainforge steps (median s): " + ", ".join(
        f"{n} {statistics.median([s[n] for s in step_times if n in s]):.2f}" for n in names))
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    print(f"entrypoint start -> RUNNING event (n={len(latencies)}): p50 {p50:.2f}s, "
          f"p95 {p95:.2f}s (target p50 <= 2 s: {'met' if p50 <= 2 else 'MISSED'})")
    print(f"work dir {work}")
    if head is not None:
        head.stop()


if __name__ == "__main__":
    main()
