"""ONNX Runtime vs PyTorch on the CPU, and what the ONNX conversion costs in mAP.

1. Latency: yolov8n (80 classes, built from yolov8n.yaml: weights do not change the arithmetic
   cost) at 640x640, batch 1, exported to ONNX exactly as the export job does. Both runtimes
   get the same number of intra-op threads (torch.set_num_threads and ORT's
   intra_op_num_threads), the same letterboxed input (preprocessing is done once, outside the
   timed region), 10 warm-up runs, then ``--runs`` timed forward passes taken turn by turn
   (so load from other processes hits both alike). Prints the ratio of p50s; the target is
   ONNX <= 0.8x PyTorch.
2. Accuracy: yolov8n trained from scratch for a short while on the synthetic shapes set at
   64 px (the recipe of ``trained`` in tests/fixtures/checkpoints.py), exported to ONNX, then
   both files evaluated with stock Ultralytics on the held-out test split with the settings
   the export job's own gate uses (``jobs.export.measure.eval_settings``: square batches,
   since an exported graph has a fixed input shape). Prints ONNX - PyTorch mAP50-95.

Usage: python bench/export.py [--threads N] [--runs N] [--skip-map] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

from _smoke import parse_args  # noqa: E402

from tests.fixtures.checkpoints import DETECTOR_DATASET, DETECTOR_TRAIN  # noqa: E402

#: What a run prints for its two figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"ratio ONNX/PyTorch \(p50\) = \d+\.\d\dx",
                     r"ONNX - PyTorch mAP50-95 = [+-]\d\.\d{4}")


def latency(work: Path, threads: int, runs: int, imgsz: int) -> float:
    import torch
    from ultralytics.models.yolo.model import YOLO

    from jobs.export import convert, measure
    from trainforge.datasets import synth

    model = YOLO("yolov8n.yaml")
    weights = work / "yolov8n.pt"
    model.save(str(weights))
    onnx = convert.export_onnx(weights, work / "model.onnx", imgsz=imgsz, batch=1,
                               dynamic=False, simplify=True, opset=None)
    image = sorted((synth(work / "img", classes=3, train=1, val=1, test=0, imgsz=imgsz)
                    / "train" / "images").glob("*.png"))[0]
    x = measure.latency_input(image, imgsz, 1)
    torch.set_num_threads(threads)
    # Untrained weights produce denormal activations, which real models rarely do and which
    # cost CPUs dearly: both runtimes flush them to zero.
    torch.set_flush_denormal(True)
    pytorch = measure.ultralytics_runner(weights, x, device="cpu")
    if pytorch.threads != threads:
        raise SystemExit(f"torch runs with {pytorch.threads} threads, not {threads}")
    onnxrt = measure.onnxruntime_runner(onnx, x, device="cpu", threads=threads,
                                        denormal_as_zero=True)
    pt, ort = measure.time_interleaved([pytorch, onnxrt], runs=runs)
    ratio = ort.p50 / pt.p50
    print(f"latency  yolov8n {imgsz}x{imgsz} batch 1, CPU, {threads} intra-op thread(s) each, "
          f"{runs} warm runs each, interleaved (after {measure.WARMUP_RUNS} warm-up), "
          "denormals flushed in both")
    print(f"  PyTorch {torch.__version__}: p50 {pt.p50 * 1e3:.1f} ms  p95 {pt.p95 * 1e3:.1f} ms")
    import onnxruntime

    print(f"  ONNX Runtime {onnxruntime.__version__}: p50 {ort.p50 * 1e3:.1f} ms  "
          f"p95 {ort.p95 * 1e3:.1f} ms")
    print(f"  ratio ONNX/PyTorch (p50) = {ratio:.2f}x  (target <= 0.80x: "
          f"{'met' if ratio <= 0.8 else 'NOT met'})")
    return ratio


def accuracy(work: Path, train_images: int, epochs: int) -> float:
    from ultralytics.models.yolo.model import YOLO

    from jobs.export import convert, measure
    from trainforge.datasets import synth, write_local_data_yaml

    dataset = {**DETECTOR_DATASET, "train": train_images}
    recipe = {**DETECTOR_TRAIN, "epochs": epochs}
    root = synth(work / "shapes", **dataset)  # type: ignore[arg-type]
    data_yaml = write_local_data_yaml(root, work / "data.yaml")
    started = time.perf_counter()
    YOLO("yolov8n.yaml").train(data=str(data_yaml), device="cpu", workers=0, plots=False,
                               val=False, amp=False, cache="ram", project=str(work / "runs"),
                               name="train", exist_ok=True, verbose=False, **recipe)
    weights = work / "runs" / "train" / "weights" / "last.pt"
    trained_s = time.perf_counter() - started
    imgsz = int(recipe["imgsz"])
    onnx = convert.export_onnx(weights, work / "shapes.onnx", imgsz=imgsz, batch=1,
                               dynamic=False, simplify=True, opset=None)
    # The export job's own settings (its gate compares best.pt and each export with them).
    settings = measure.eval_settings(data_yaml, "test", imgsz, 1, "cpu")
    pt = measure.evaluate(weights, settings, work / "val")
    ox = measure.evaluate(onnx, settings, work / "val")
    delta = ox.map50_95 - pt.map50_95
    print(f"accuracy yolov8n from scratch on synthetic shapes ({train_images} train images, "
          f"{epochs} epochs at {imgsz} px, {trained_s:.0f} s), test split ({pt.images} images), "
          f"batch {settings.batch}, rect {'on' if settings.rect else 'off'}, "
          f"conf {settings.conf:g}, iou {settings.iou:g}")
    print(f"  PyTorch mAP50-95 {pt.map50_95:.4f} (mAP50 {pt.map50:.4f}); "
          f"ONNX mAP50-95 {ox.map50_95:.4f} (mAP50 {ox.map50:.4f})")
    print(f"  ONNX - PyTorch mAP50-95 = {delta:+.4f}  (gate: |delta| <= 0.005)")
    return delta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="intra-op threads for both runtimes (default: all CPUs)")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--imgsz", type=int, default=640, help="latency input side")
    parser.add_argument("--skip-map", action="store_true", help="latency only (no training)")
    parser.add_argument("--train-images", type=int, default=DETECTOR_DATASET["train"],
                        help="accuracy: training images")
    parser.add_argument("--epochs", type=int, default=DETECTOR_TRAIN["epochs"],
                        help="accuracy: training epochs")
    args = parse_args(parser, runs=3, imgsz=64, train_images=8, epochs=1)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        latency(Path(tmp), args.threads, args.runs, args.imgsz)
        if not args.skip_map:
            accuracy(Path(tmp), args.train_images, args.epochs)


if __name__ == "__main__":
    main()
