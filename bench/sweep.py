"""ASHA against FIFO on the same sweep: how many epochs early stopping saves, and what it costs.

Both runs are the real job (``python -m jobs.sweep``, a private local Ray, CPU): the same
search space, searcher seed (hence the same sampled configs, checked) and training seed, the
same concurrency; only ``sweep.scheduler`` differs. FIFO runs every trial to its full budget;
ASHA stops trials that trail their rung. Printed: total epochs trained and the best val
mAP50-95 over the trials for each, their ratio and difference, and the held-out test mAP50-95
of the model each run published.

The trials fine-tune (as users do) from a base model that this script first trains on
another variant of the synthetic shapes (cached in the work directory): trained from scratch
for a few epochs at 64 px, YOLO scores 0 mAP for every config and no scheduler can rank them.

Both jobs are launched as the dispatcher launches them (bench/_trainjobs.py: the embedded
server's team, its storage access rules in TRAINFORGE_JOB_ACCESS, the spec's sha256), each on a
private local Ray whatever RAY_ADDRESS this shell has.

Run: ``.venv/bin/python bench/sweep.py`` (about 10-15 minutes on 2 CPU cores, the first run
included; ``--help`` for the sizes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _smoke import add_plots_option, parse_args  # noqa: E402
from _trainjobs import EventRecorder, report, run_job  # noqa: E402

TARGET_EPOCH_RATIO = 0.35
TARGET_MAP_DELTA = 0.02

#: What a run prints for its figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"same sampled configs in both runs: True",
                     r"epochs ASHA/FIFO = \d+/\d+ = \d\.\d{3} .*best val mAP50-95 FIFO - ASHA = "
                     r"[+-]\d\.\d{4}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--grace-period", type=int, default=1)
    parser.add_argument("--reduction-factor", type=float, default=3.0)
    parser.add_argument("--test-images", type=int, default=32)
    parser.add_argument("--base-images", type=int, default=512,
                        help="the base model's training images (another variant)")
    parser.add_argument("--base-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "trainforge-bench-sweep",
                        help="datasets, the cached base model and the jobs' homes")
    add_plots_option(parser)
    args = parse_args(parser, trials=2, epochs=2, train_images=8, val_images=4, test_images=4,
                      base_images=8, base_epochs=1, plots=False)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    # A private local Ray for each run, whatever this shell points the jobs at.
    for key in ("RAY_ADDRESS", "TRAINFORGE_LOCAL_RAY"):
        os.environ.pop(key, None)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    t0 = time.perf_counter()
    base = pretrained_base(args.work, args.imgsz, images=args.base_images,
                           epochs=args.base_epochs)
    print(f"base model: {base} ({time.perf_counter() - t0:.0f}s)")
    data = args.work / (f"finetune-{args.train_images}-{args.val_images}-{args.test_images}-"
                        f"{args.imgsz}")
    if not data.is_dir():
        from trainforge.datasets import synth

        synth(data, train=args.train_images, val=args.val_images, test=args.test_images,
              imgsz=args.imgsz, classes=3, seed=args.seed, variant=1)

    api = EventRecorder().start()
    runs: dict[str, dict[str, Any]] = {}
    for scheduler in ("asha", "fifo"):
        t0 = time.perf_counter()
        result = run_sweep(args, api, scheduler, data, base)
        runs[scheduler] = {"report": result, "seconds": time.perf_counter() - t0}
        sweep = result["sweep"]
        best = max((t["best_map50_95"] or 0.0) for t in sweep["trials"])
        print(f"{scheduler}: {sweep['epochs_total']} epochs, best val mAP50-95 {best:.4f}, "
              f"{sweep['trials_stopped_early']} of {sweep['trials_total']} trials stopped "
              f"early, test mAP50-95 of the published model "
              f"{result['evaluation']['metrics']['mAP50-95']:.4f} "
              f"({runs[scheduler]['seconds']:.0f}s)")

    asha, fifo = runs["asha"]["report"]["sweep"], runs["fifo"]["report"]["sweep"]
    same = _configs(asha) == _configs(fifo)
    print(f"same sampled configs in both runs: {same}")
    print(f"{'trial':>5}  {'lr0':>8} {'momentum':>8} {'w_decay':>8} | "
          f"{'FIFO ep':>7} {'best':>6} | {'ASHA ep':>7} {'best':>6}")
    for (_, config, f_row), (_, _, a_row) in zip(_configs_rows(fifo), _configs_rows(asha),
                                                 strict=True):
        print(f"{_index(f_row['trial_id']):>5}  {config['lr0']:8.5f} {config['momentum']:8.4f} "
              f"{config['weight_decay']:8.5f} | {f_row['epochs_run']:7d} "
              f"{f_row['best_map50_95'] or 0:6.4f} | {a_row['epochs_run']:7d} "
              f"{a_row['best_map50_95'] or 0:6.4f}")
    best_asha = max((t["best_map50_95"] or 0.0) for t in asha["trials"])
    best_fifo = max((t["best_map50_95"] or 0.0) for t in fifo["trials"])
    ratio = asha["epochs_total"] / fifo["epochs_total"]
    delta = best_fifo - best_asha
    met = same and ratio <= TARGET_EPOCH_RATIO and delta <= TARGET_MAP_DELTA
    replay_settings(fifo, args, measured=asha["epochs_total"])
    print(f"epochs ASHA/FIFO = {asha['epochs_total']}/{fifo['epochs_total']} = {ratio:.3f} "
          f"(target <= {TARGET_EPOCH_RATIO}); best val mAP50-95 FIFO - ASHA = {delta:+.4f} "
          f"(target <= {TARGET_MAP_DELTA}); wall ASHA/FIFO = "
          f"{runs['asha']['seconds']:.0f}s/{runs['fifo']['seconds']:.0f}s; "
          f"target {'MET' if met else 'NOT MET'}; total {time.perf_counter() - started:.0f}s")
    return 0


def replay_settings(fifo: dict[str, Any], args: argparse.Namespace, *, measured: int) -> None:
    """ASHA's decisions replayed on the FIFO run's per-epoch curves, for other settings.

    Trials are deterministic (same config, same seed), so a trial ASHA lets run follows its
    FIFO curve; the replay assumes equal epoch durations, which decides who reaches a rung
    first. Its result for the run's own settings is printed beside the measured one.
    """
    curves = [[v for _, v in row["map50_95_per_epoch"]] for _, _, row in _configs_rows(fifo)]
    best_fifo = max(max(c) for c in curves)
    for grace in (1, 2):
        for rf in (2.0, 3.0, 4.0):
            epochs, best = _replay_asha(curves, max_t=args.epochs, grace=grace, rf=rf,
                                        concurrency=args.concurrency)
            own = grace == args.grace_period and rf == args.reduction_factor
            print(f"  replay grace {grace} rf {rf:g}: epochs {epochs}/{sum(map(len, curves))} "
                  f"= {epochs / sum(map(len, curves)):.3f}, best {best:.4f} "
                  f"(FIFO - ASHA {best_fifo - best:+.4f})"
                  + (f"  <- this run's settings; measured {measured} epochs" if own else ""))


def _replay_asha(curves: list[list[float]], *, max_t: int, grace: int, rf: float,
                 concurrency: int) -> tuple[int, float]:
    """Ray's async successive halving (one bracket) on known curves; (epochs, best)."""
    import heapq

    import numpy as np

    milestones, m = [], float(grace)
    while m < max_t:
        milestones.append(m)
        m *= rf
    rungs: dict[float, dict[int, float]] = {m: {} for m in milestones}
    waiting = list(range(len(curves)))
    events: list[tuple[float, int, int]] = []
    ran: dict[int, int] = {}
    best = 0.0
    for _ in range(concurrency):
        if waiting:
            i = waiting.pop(0)
            heapq.heappush(events, (1 + i * 1e-3, i, 1))
    while events:
        now, i, epoch = heapq.heappop(events)
        value = curves[i][epoch - 1]
        ran[i], best = epoch, max(best, value)
        stop = epoch >= max_t
        for m in sorted(milestones, reverse=True):
            if epoch >= m and i not in rungs[m]:
                seen = list(rungs[m].values())
                if seen and value < float(np.nanpercentile(seen, (1 - 1 / rf) * 100)):
                    stop = True
                rungs[m][i] = value
                break
        if not stop:
            heapq.heappush(events, (now + 1, i, epoch + 1))
        elif waiting:
            j = waiting.pop(0)
            heapq.heappush(events, (now + 1 + j * 1e-3, j, 1))
    return sum(ran.values()), best


def pretrained_base(work: Path, imgsz: int, *, images: int, epochs: int) -> Path:
    """A YOLOv8n trained from scratch on ``images`` synthetic images (variant 0), cached by
    recipe (its training parameters and image count)."""
    from jobs.core import adapter
    from trainforge.datasets import synth, write_local_data_yaml
    from trainforge.spec import TrainParams

    params = TrainParams(epochs=epochs, imgsz=imgsz, batch=16, workers=0, warmup_epochs=1,
                         optimizer="SGD", lr0=0.02, amp=False, seed=0,
                         augment={"mosaic": 0.0, "close_mosaic": 0})
    recipe = hashlib.sha256(f"{images} {params.model_dump_json()}".encode()).hexdigest()[:12]
    base = work / f"base-{recipe}.pt"
    if base.is_file():
        return base
    data = work / f"pretrain-{images}-{imgsz}"
    if not data.is_dir():
        synth(data, train=images, val=32, test=0, imgsz=imgsz, classes=3, seed=1, variant=0)
    adapter.prepare_environment(work / "ultralytics")
    # The pretraining's progress bars would bury the result (Ultralytics reads this on import;
    # the jobs get the environment back without it).
    os.environ["YOLO_VERBOSE"] = "False"
    yaml = write_local_data_yaml(data, work / "pretrain.yaml")
    run_dir = work / "pretrain-run"
    shutil.rmtree(run_dir, ignore_errors=True)
    outputs = adapter.train(adapter.train_overrides(params, data_yaml=yaml, model="yolov8n.yaml",
                                                    run_dir=run_dir, device="cpu", plots=False),
                            _Quiet())
    shutil.copyfile(outputs.best, base)
    os.environ.pop("YOLO_VERBOSE")
    return base


class _Quiet:
    def on_epoch(self, result: Any) -> None:
        print(f"  pretrain epoch {result.epoch}/{result.epochs}: mAP50-95 "
              f"{result.metrics.get('metrics/mAP50-95(B)', 0):.3f}", flush=True)

    def on_checkpoint(self, epoch: int, last: Path, best: Path | None) -> None:
        pass


def run_sweep(args: argparse.Namespace, api: EventRecorder, scheduler: str, data: Path,
              base: Path) -> dict[str, Any]:
    """One ``python -m jobs.sweep`` run, launched as the dispatcher does; returns its
    report.json."""
    home = args.work / scheduler
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    spec = {
        "kind": "sweep", "name": "bench-sweep", "dataset": {"uri": str(data)},
        "model": {"base": f"file://{base}"},
        "train": {"epochs": args.epochs, "imgsz": args.imgsz, "batch": 16, "workers": 0,
                  "warmup_epochs": 0, "optimizer": "SGD", "amp": False, "seed": args.seed,
                  "patience": args.epochs, "plots": args.plots,
                  "augment": {"mosaic": 0.0, "close_mosaic": 0}},
        "resources": {"gpus": 0, "cpus": 1},
        "retries": 0,
        "sweep": {
            "trials": args.trials, "searcher": "random", "scheduler": scheduler,
            "grace_period": args.grace_period, "reduction_factor": args.reduction_factor,
            "max_concurrent_trials": args.concurrency, "gpus_per_trial": 0,
            "cpus_per_trial": 1,
            "space": {"lr0": {"loguniform": [1e-4, 0.1]},
                      "momentum": {"uniform": [0.6, 0.95]},
                      "weight_decay": {"loguniform": [1e-5, 1e-2]}},
        },
    }
    job_id = f"bench-{scheduler}"
    run_job(home, api.url, job_id, spec, module="jobs.sweep", RAY_USAGE_STATS_ENABLED="0")
    return report(home, job_id)


def _index(trial_id: str) -> int:
    return int(trial_id.rsplit("_", 1)[-1])


def _configs_rows(sweep: dict[str, Any]) -> list[tuple[int, dict[str, Any], dict[str, Any]]]:
    return sorted((_index(t["trial_id"]), t["config"], t) for t in sweep["trials"])


def _configs(sweep: dict[str, Any]) -> list[tuple[int, str]]:
    return [(i, json.dumps(c, sort_keys=True)) for i, c, _ in _configs_rows(sweep)]


if __name__ == "__main__":
    raise SystemExit(main())
