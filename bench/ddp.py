"""Data-parallel training: the same job on 1 and on N Ray Train workers, side by side.

Both runs are ``python -m jobs.train`` with one spec that differs only in
``resources.workers``: same model YAML, dataset, global batch, epochs, seed and evaluation
path (best.pt on the held-out test split, by the job itself). On CPUs the workers talk gloo;
with ``--gpus`` each worker holds one GPU and they talk NCCL.

Threads: Ultralytics runs torch with one thread per process on import, so on CPUs each
worker computes on one core: N workers use N cores where one worker uses one. Read the
speed-up as what N cores (or GPUs) give one job, not as a per-core gain.

Printed per run: seconds per epoch (the median of the epochs after the first, from the job's
progress events), training images per second (dataset images / training-phase seconds), the
job's wall time and the test-split mAP50 / mAP50-95; then the ratios N workers : 1 worker.

Usage: python bench/ddp.py [--workers 2] [--epochs 10] [--train 256] [--imgsz 128] [--gpus]
                           [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import add_plots_option, parse_args  # noqa: E402
from _trainjobs import EventRecorder, report, run_job  # noqa: E402

#: What a run prints for its figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"\d+ workers : 1 worker: epoch time x\d+\.\d\d, throughput x\d+\.\d\d, "
                     r"wall x\d+\.\d\d, mAP50-95 [+-]\d\.\d{4}",)


def spec(dataset: Path, args: argparse.Namespace, workers: int) -> dict[str, Any]:
    return {
        "kind": "train",
        "name": "shapes-ddp",
        "dataset": {"uri": f"file://{dataset}"},
        "model": {"base": "yolov8n.yaml"},
        "train": {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
                  "nbs": args.batch, "optimizer": "SGD", "lr0": 0.02, "warmup_epochs": 0,
                  "seed": 0, "workers": 0, "patience": 1000, "amp": bool(args.gpus),
                  "plots": args.plots, "augment": {"mosaic": 0.0, "close_mosaic": 0}},
        "resources": {"workers": workers, "gpus_per_worker": 1 if args.gpus else 0,
                      "cpus": 1 if not args.gpus else 4},
        "retries": 0,
    }


def epochs_of(api: EventRecorder, job: str) -> list[dict[str, float]]:
    return [event["metrics"] for _, event in api.events.get(job, [])
            if event["type"] == "progress"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="N, compared with 1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train", type=int, default=256, help="training images")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="global batch (both runs)")
    parser.add_argument("--gpus", action="store_true", help="one GPU per worker (NCCL)")
    parser.add_argument("--workdir", type=Path, default=None)
    add_plots_option(parser)
    args = parse_args(parser, epochs=1, train=8, imgsz=64, batch=4, plots=False)

    from trainforge.datasets import synth

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tf-ddp-"))
    dataset = work / f"shapes-{args.train}-{args.imgsz}"
    if not (dataset / "data.yaml").exists():
        synth(dataset, train=args.train, val=32, test=64, imgsz=args.imgsz, seed=3, classes=3)
    api = EventRecorder().start()
    device = "GPU (NCCL)" if args.gpus else "CPU (gloo)"
    print(f"{args.train} train images at {args.imgsz} px, global batch {args.batch}, "
          f"{args.epochs} epochs, yolov8n from scratch, {device}")

    rows: dict[int, dict[str, float]] = {}
    for workers in (1, args.workers):
        job = f"ddp-{workers}w-{'gpu' if args.gpus else 'cpu'}"
        wall = run_job(work / "home", api.url, job, spec(dataset, args, workers))
        epochs = epochs_of(api, job)
        steady = epochs[1:] or epochs
        metrics = report(work / "home", job)["evaluation"]["metrics"]
        rows[workers] = {
            "epoch_s": statistics.median(e["epoch_seconds"] for e in steady),
            "images_s": statistics.median(e["images_per_second"] for e in steady),
            "wall_s": wall, "map50": metrics["mAP50"], "map50_95": metrics["mAP50-95"],
        }
        r = rows[workers]
        print(f"{workers} worker(s): {r['epoch_s']:6.2f} s/epoch  {r['images_s']:7.1f} img/s  "
              f"wall {r['wall_s']:5.0f} s  test mAP50 {r['map50']:.4f}  "
              f"mAP50-95 {r['map50_95']:.4f}")

    one, many = rows[1], rows[args.workers]
    print(f"{args.workers} workers : 1 worker: epoch time x{many['epoch_s'] / one['epoch_s']:.2f}, "
          f"throughput x{many['images_s'] / one['images_s']:.2f}, "
          f"wall x{many['wall_s'] / one['wall_s']:.2f}, "
          f"mAP50-95 {many['map50_95'] - one['map50_95']:+.4f} "
          f"(mAP50 {many['map50'] - one['map50']:+.4f})")
    print(f"work dir {work}")


if __name__ == "__main__":
    main()
