"""Accuracy and latency of a model file, measured the same way for best.pt and its exports.

Accuracy is stock Ultralytics validation (``YOLO(path).val``) with every setting passed
explicitly; the settings Ultralytics actually used are read back from the validator and a
difference is an error, because comparing a batch-1 square-padded ONNX run with a rectangular
batch-16 PyTorch run would measure the settings, not the conversion.

Latency is the forward pass alone on one preprocessed input, identical for every format:
preprocessing is done once, outside the timed region, with Ultralytics' own letterbox.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.core import adapter
from jobs.core.adapter.evaluation import EvalSettings, Evaluation, SettingsChanged
from trainforge.errors import ExportError

log = logging.getLogger(__name__)

#: Forward passes run and thrown away before timing (allocator, cuDNN/TensorRT autotuning).
WARMUP_RUNS = 10


@dataclass(frozen=True)
class Latency:
    """Forward-pass wall time in seconds over ``runs`` warm runs."""

    p50: float
    p95: float
    mean: float
    runs: int
    batch: int
    device: str
    threads: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _workers() -> int:
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(8, cpus // 2)


def eval_settings(data_yaml: Path, split: str, imgsz: int, batch: int,
                  device: str) -> EvalSettings:
    """The settings every format and best.pt are scored with: square batches (an exported
    graph has a fixed input shape), the validator's conf and IoU."""
    return EvalSettings(data_yaml, split, imgsz, batch, device, rect=False, workers=_workers())


def evaluate(model_path: Path, settings: EvalSettings, save_dir: Path) -> Evaluation:
    """mAP of one model file on ``settings.split`` (jobs/core/adapter's ``evaluate``).

    Raises:
        ExportError: validation failed, or Ultralytics changed a setting (not like for like).
    """
    try:
        return adapter.evaluate(model_path, settings, save_dir / f"val-{model_path.stem}",
                                failure=ExportError)
    except SettingsChanged as exc:
        raise ExportError(f"evaluating {model_path.name}: {exc}; the comparison with best.pt "
                          "would not be like for like") from None


def latency_input(image: Path, imgsz: int, batch: int) -> np.ndarray:
    """One letterboxed, normalised NCHW float32 batch made from ``image`` (Ultralytics' letterbox).

    Raises:
        ExportError: the image cannot be read.
    """
    import cv2

    bgr = cv2.imread(str(image))
    if bgr is None:
        raise ExportError(f"cannot read {image} to time inference")
    boxed = adapter.letterbox(bgr, imgsz)
    chw = boxed[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0
    return np.ascontiguousarray(np.repeat(chw[None], batch, axis=0))


@dataclass(frozen=True)
class Runner:
    """One forward pass on a prepared input, and how to wait for it to finish."""

    run: Callable[[], object]
    sync: Callable[[], None]
    device: str
    threads: int
    batch: int


def ultralytics_runner(model_path: Path, x: np.ndarray, *, device: str) -> Runner:
    """best.pt or a TensorRT engine through Ultralytics' AutoBackend (its stock inference path).

    Args:
        model_path: a .pt or .engine file.
        x: the input from :func:`latency_input`.
        device: "cpu" or a CUDA index such as "0".
    """
    import torch

    dev = torch.device("cpu" if device == "cpu" else f"cuda:{device}")
    backend = adapter.inference_backend(model_path, dev)
    tensor = torch.from_numpy(x).to(dev)

    def run() -> object:
        with torch.inference_mode():
            return backend(tensor)

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return Runner(run, sync, str(dev), torch.get_num_threads(), int(x.shape[0]))


def onnxruntime_runner(model_path: Path, x: np.ndarray, *, device: str, threads: int,
                       denormal_as_zero: bool = False) -> Runner:
    """An ONNX file in a plain ONNX Runtime session.

    Args:
        model_path: the .onnx file.
        x: the input from :func:`latency_input`.
        device: "cpu", or a CUDA index when onnxruntime-gpu is installed.
        threads: intra-op threads; pass torch's thread count so both runtimes get the same CPU.
        denormal_as_zero: flush denormals (pair with ``torch.set_flush_denormal(True)``).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if denormal_as_zero:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    providers: list[Any] = ["CPUExecutionProvider"]
    if device != "cpu":
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device)}))
    session = ort.InferenceSession(str(model_path), options, providers=providers)
    feed = {session.get_inputs()[0].name: x}
    where = "cpu" if device == "cpu" else f"cuda:{device}"
    return Runner(lambda: session.run(None, feed), lambda: None, where, threads,
                  int(x.shape[0]))


def time_interleaved(runners: list[Runner], *, runs: int) -> list[Latency]:
    """Time several runners turn by turn, so that load from other processes hits them alike.

    Each gets :data:`WARMUP_RUNS` untimed runs, then ``runs`` timed ones.
    """
    for runner in runners:
        for _ in range(WARMUP_RUNS):
            runner.run()
        runner.sync()
    samples: list[list[float]] = [[] for _ in runners]
    for _ in range(runs):
        for runner, bucket in zip(runners, samples, strict=True):
            start = time.perf_counter()
            runner.run()
            runner.sync()
            bucket.append(time.perf_counter() - start)
    return [_summary(bucket, r.batch, r.device, r.threads) for r, bucket in
            zip(runners, samples, strict=True)]


def _summary(samples: list[float], batch: int, device: str, threads: int) -> Latency:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return Latency(statistics.median(ordered), p95, statistics.fmean(ordered), len(ordered),
                   batch, device, threads)


def onnx_device() -> str:
    """Where ONNX is evaluated: CUDA when onnxruntime-gpu and a GPU are both present, else CPU.

    Ultralytics would try to pip-install onnxruntime-gpu if asked for a GPU without it.
    """
    import onnxruntime as ort
    import torch

    cuda = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
    return "0" if cuda else "cpu"
