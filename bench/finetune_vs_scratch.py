"""Fine-tuning vs training from scratch on a small dataset of a new domain.

1. A base model is trained by trainforge (``python -m jobs.train``) on synthetic shapes,
   variant 0, and published to the registry.
2. Two jobs then train on variant 1 (other colours, object sizes and backgrounds) with only a
   few training images, on the same budget (same epochs, hyperparameters, data, seed): one
   starts from ``registry://<base>@<version>``, the other from ``yolov8n.yaml`` (scratch).
3. Both are scored by the jobs themselves on variant 1's held-out test split.

The tutorial (reference/fine-tune-yolov8-tutorial.txt) claims fine-tuning wins by 15-25 mAP50
points on small datasets; this prints what we measure.

Usage: python bench/finetune_vs_scratch.py [--base-epochs 25] [--epochs 15] [--train 48]
                                           [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import add_plots_option, parse_args  # noqa: E402
from _trainjobs import EventRecorder, report, run_job  # noqa: E402

#: What a run prints for its figure (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"fine-tuning - scratch on variant 1's test split: [+-]\d+\.\d mAP50 points",)


def spec(name: str, dataset: Path, base: str, epochs: int, imgsz: int,
         plots: bool) -> dict[str, Any]:
    return {
        "kind": "train",
        "name": name,
        "dataset": {"uri": f"file://{dataset}"},
        "model": {"base": base},
        "train": {"epochs": epochs, "imgsz": imgsz, "batch": 16, "optimizer": "SGD",
                  "lr0": 0.02, "warmup_epochs": 0, "seed": 0, "workers": 0, "patience": 1000,
                  "plots": plots},
        "resources": {"gpus": 0, "cpus": 2},
        "retries": 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-epochs", type=int, default=25)
    parser.add_argument("--base-train", type=int, default=128, help="variant-0 train images")
    parser.add_argument("--epochs", type=int, default=15, help="budget on variant 1")
    parser.add_argument("--train", type=int, default=48, help="variant-1 train images")
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=None)
    add_plots_option(parser)
    args = parse_args(parser, base_epochs=1, base_train=8, epochs=1, train=8, imgsz=64,
                      plots=False)

    from trainforge.datasets import synth

    work = args.workdir or Path(tempfile.mkdtemp(prefix="tf-finetune-"))
    home = work / "home"
    def dataset(name: str, **kwargs: Any) -> Path:
        root = work / name
        return root if (root / "data.yaml").exists() else synth(root, **kwargs)

    source = dataset(f"shapes-v0-{args.base_train}", train=args.base_train, val=32, test=32,
                     imgsz=args.imgsz, variant=0, seed=1)
    target = dataset(f"shapes-v1-{args.train}", train=args.train, val=16, test=48,
                     imgsz=args.imgsz, variant=1, seed=2)
    api = EventRecorder().start()

    started = time.perf_counter()
    base_job = f"base-v0-{args.base_train}x{args.base_epochs}"
    if (home / "artifacts" / "jobs" / base_job / "train" / "report.json").exists():
        base_note = "reused from an earlier run in this work dir"
    else:
        seconds = run_job(home, api.url, base_job, spec("shapes-base", source, "yolov8n.yaml",
                                                        args.base_epochs, args.imgsz,
                                                        args.plots))
        base_note = f"{seconds:.0f}s"
    base = report(home, base_job)["evaluation"]["metrics"]
    print(f"base model (variant 0, {args.base_train} images, {args.base_epochs} epochs, "
          f"{base_note}): test mAP50 {base['mAP50']:.3f}")

    results = {}
    budget = f"{args.train}x{args.epochs}"
    for job, start in ((f"finetune-v1-{budget}", f"registry://shapes-base@{base_job}"),
                       (f"scratch-v1-{budget}", "yolov8n.yaml")):
        seconds = run_job(home, api.url, job,
                          spec("shapes-v1", target, start, args.epochs, args.imgsz,
                               args.plots))
        results[job] = report(home, job)["evaluation"]["metrics"]
        print(f"{job:20s} from {start:40s} ({args.train} images, {args.epochs} epochs, "
              f"{seconds:.0f}s): test mAP50 {results[job]['mAP50']:.3f} "
              f"mAP50-95 {results[job]['mAP50-95']:.3f}")

    tuned, scratch = results[f"finetune-v1-{budget}"], results[f"scratch-v1-{budget}"]
    gain = (tuned["mAP50"] - scratch["mAP50"]) * 100
    gain95 = (tuned["mAP50-95"] - scratch["mAP50-95"]) * 100
    print(f"fine-tuning - scratch on variant 1's test split: {gain:+.1f} mAP50 points "
          f"({gain95:+.1f} mAP50-95 points); tutorial claim: +15 to +25 mAP50 points")
    print(f"total {time.perf_counter() - started:.0f}s; work dir {work}")


if __name__ == "__main__":
    main()
