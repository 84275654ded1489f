"""Convert best.pt into the deployable formats, through Ultralytics' own exporter.

Each conversion runs on its own copy of the weights in its own folder: Ultralytics writes its
output next to the weights (``best.onnx``, ``best.engine``) and a TensorRT export writes an
intermediate ``best.onnx`` too, which must not replace the ONNX artifact.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.core import adapter
from jobs.core.adapter.export import Precision
from trainforge.errors import ExportError

__all__ = ["CALIBRATION_IMAGES", "GpuInfo", "Precision", "check_onnx", "cuda_gpu",
           "engine_file_name", "export_engine", "export_onnx", "gpu_slug",
           "tensorrt_unavailable_reason", "tensorrt_version"]

log = logging.getLogger(__name__)


#: INT8 calibration reads at most this many train images (TensorRT's guide suggests ~500).
CALIBRATION_IMAGES = 512


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device an engine is built on (an engine only runs on that architecture)."""

    index: int
    name: str
    slug: str
    capability: str


def gpu_slug(name: str) -> str:
    """A file-name-safe GPU model: ``NVIDIA H100 80GB HBM3`` → ``nvidia-h100``.

    Memory size and memory type are dropped: they do not change what an engine runs on.
    """
    tokens = re.split(r"[^a-z0-9]+", name.lower())
    kept = [t for t in tokens if t and not re.fullmatch(r"\d+gb|hbm\w*|gddr\w*", t)]
    return "-".join(kept) or "gpu"


def engine_file_name(gpu: GpuInfo, precision: Precision) -> str:
    """``model-<gpu>-<precision>.engine``, e.g. ``model-nvidia-h100-fp16.engine``."""
    return f"model-{gpu.slug}-{precision}.engine"


def cuda_gpu() -> GpuInfo | None:
    """The first CUDA device, or None when torch sees none."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    major, minor = torch.cuda.get_device_capability(0)
    return GpuInfo(0, name, gpu_slug(name), f"{major}.{minor}")


def tensorrt_unavailable_reason() -> str | None:
    """Why a TensorRT engine cannot be built here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        cuda = torch.version.cuda or "none (CPU-only torch build)"
        return f"no CUDA GPU visible to torch (torch {torch.__version__}, CUDA {cuda})"
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed (pip install tensorrt-cu12)"
    return None


def tensorrt_version() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return None
    return str(importlib.import_module("tensorrt").__version__)


def _staged_weights(weights: Path, stage: Path) -> Path:
    stage.mkdir(parents=True, exist_ok=True)
    staged = stage / "best.pt"
    shutil.copyfile(weights, staged)
    return staged


def export_onnx(
    weights: Path,
    dest: Path,
    *,
    imgsz: int,
    batch: int,
    dynamic: bool,
    simplify: bool,
    opset: int | None,
) -> Path:
    """Export an FP32 ONNX graph to ``dest``.

    Args:
        weights: the best.pt checkpoint.
        dest: the artifact path (e.g. ``<workdir>/out/model.onnx``).
        imgsz: square input side.
        batch: fixed batch size (the maximum batch when ``dynamic``).
        dynamic: dynamic batch and image axes.
        simplify: run onnxslim over the graph.
        opset: ONNX opset; None lets Ultralytics choose the newest the installed torch supports.

    Returns:
        ``dest``.

    Raises:
        ExportError: the exporter failed (its message is kept).
    """
    staged = _staged_weights(weights, dest.parent / ".stage-onnx")
    out = adapter.export(staged, format="onnx", precision="fp32", imgsz=imgsz, batch=batch,
                         dynamic=dynamic, simplify=simplify, opset=opset, device="cpu")
    check_onnx(Path(out), imgsz=imgsz, batch=batch, dynamic=dynamic, opset=opset)
    shutil.move(str(out), dest)
    shutil.rmtree(staged.parent, ignore_errors=True)
    return dest


def check_onnx(path: Path, *, imgsz: int, batch: int, dynamic: bool, opset: int | None) -> None:
    """Refuse an ONNX file whose input shape or opset is not the one requested.

    Ultralytics adjusts some export options with only a log line; a requested option must
    never be silently rewritten.

    Raises:
        ExportError: naming what differs.
    """
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    got_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    problems = []
    if opset is not None and got_opset != opset:
        problems.append(f"opset {got_opset} instead of {opset}")
    if dynamic:
        if isinstance(dims[0], int):
            problems.append(f"a fixed batch {dims[0]} instead of a dynamic one")
    elif dims != [batch, 3, imgsz, imgsz]:
        problems.append(f"input shape {dims} instead of {[batch, 3, imgsz, imgsz]}")
    if problems:
        raise ExportError(f"the ONNX exporter produced {', '.join(problems)}; set export "
                          "options this Ultralytics/torch version supports")


def export_engine(
    weights: Path,
    dest: Path,
    *,
    precision: Precision,
    imgsz: int,
    batch: int,
    dynamic: bool,
    simplify: bool,
    opset: int | None,
    data_yaml: Path,
    train_images: int,
) -> Path:
    """Build a TensorRT engine on GPU 0.

    INT8 engines are calibrated on up to :data:`CALIBRATION_IMAGES` images of the train split
    (never the split the gates evaluate on).

    Args:
        weights: the best.pt checkpoint.
        dest: the artifact path (``model-<gpu>-<precision>.engine``).
        precision: fp16, int8 or fp32.
        imgsz, batch, dynamic, simplify, opset: as for :func:`export_onnx`.
        data_yaml: local data.yaml (INT8 calibration images).
        train_images: images in the train split (to size the calibration set).

    Returns:
        ``dest``.

    Raises:
        ExportError: TensorRT is missing or the build failed.
    """
    reason = tensorrt_unavailable_reason()
    if reason:
        raise ExportError(f"cannot build a TensorRT engine: {reason}")
    extra: dict[str, Any] = {}
    if precision == "int8":
        count = min(CALIBRATION_IMAGES, train_images)
        # An integer fraction > 1 is an image count for Ultralytics; 1 means "all of them".
        extra = {"data": str(data_yaml), "split": "train", "fraction": count if count > 1 else 1.0}
        log.info("INT8 calibration on %d train images", count)
    staged = _staged_weights(weights, dest.parent / f".stage-engine-{precision}")
    out = adapter.export(staged, format="engine", precision=precision, imgsz=imgsz,
                         batch=batch, dynamic=dynamic, simplify=simplify, opset=opset,
                         device=0, **extra)
    shutil.move(str(out), dest)
    shutil.rmtree(staged.parent, ignore_errors=True)
    return dest
