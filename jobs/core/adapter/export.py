"""Ultralytics' exporter and inference backend, for the export job (jobs/export).

Format decisions, gates and TensorRT checks are jobs/export's; this module only calls
Ultralytics, with loading hardened and the job's private settings like every other call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from jobs.core.adapter.environment import private_settings
from jobs.core.adapter.failures import raised_as
from jobs.core.adapter.safety import harden_loading
from trainforge.errors import ExportError

Precision = Literal["fp32", "fp16", "int8"]


def precision_args(precision: Precision) -> dict[str, Any]:
    """Ultralytics ≥ 8.4 takes ``quantize``; older releases take ``half``/``int8``."""
    from ultralytics.utils import DEFAULT_CFG_DICT

    if "quantize" in DEFAULT_CFG_DICT:
        return {"quantize": {"fp32": None, "fp16": 16, "int8": 8}[precision]}
    return {"half": precision == "fp16", "int8": precision == "int8"}


def export(weights: Path, *, format: str, precision: Precision, device: str | int,
           **args: Any) -> Path:
    """``YOLO(weights).export(format=…)`` without NMS in the graph; returns the file written.

    Raises:
        ExportError: Ultralytics failed (``ONNX export failed: …``, ``TensorRT fp16 build
            failed: …``, with what it raised).
    """
    private_settings()
    harden_loading()
    from ultralytics.models.yolo.model import YOLO

    with raised_as(ExportError, _failed(format, precision)):
        out = YOLO(str(weights), task="detect").export(
            format=format, device=device, nms=False, verbose=False,
            **precision_args(precision), **args)
    return Path(out)


def _failed(format: str, precision: Precision) -> str:
    if format == "onnx":
        return "ONNX export failed"
    if format == "engine":  # TensorRT build errors surface as RuntimeError/AssertionError
        return f"TensorRT {precision} build failed"
    return f"{format} export failed"


def checkpoint_input(weights: Path) -> tuple[int | None, dict[int, str]]:
    """The training image size a checkpoint records (None if it records none) and its class
    names.

    Raises:
        ExportError: Ultralytics cannot load ``weights``.
    """
    harden_loading()
    from ultralytics.models.yolo.model import YOLO

    with raised_as(ExportError, f"cannot load {weights}"):
        model = YOLO(str(weights), task="detect")
    ckpt = model.ckpt if isinstance(model.ckpt, dict) else {}
    imgsz = (ckpt.get("train_args") or {}).get("imgsz")
    if isinstance(imgsz, list | tuple):
        imgsz = max(imgsz)
    return (int(imgsz) if imgsz else None,
            {int(k): str(v) for k, v in dict(model.names).items()})


def letterbox(bgr: np.ndarray, imgsz: int) -> np.ndarray:
    """Ultralytics' own letterbox to a square ``imgsz`` input (no stride-based shrinking)."""
    from ultralytics.data.augment import LetterBox

    return np.asarray(LetterBox(new_shape=(imgsz, imgsz), auto=False)(image=bgr))


def inference_backend(model_path: Path, device: Any) -> Any:
    """Ultralytics' AutoBackend (its stock inference path) for a .pt or .engine, in eval mode."""
    harden_loading()
    from ultralytics.nn.autobackend import AutoBackend

    backend = AutoBackend(str(model_path), device=device, fp16=False, fuse=True, verbose=False)
    backend.eval()
    return backend


def ultralytics_version() -> str:
    import ultralytics

    return str(ultralytics.__version__)
