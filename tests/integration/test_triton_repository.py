"""A published version as a Triton model repository (trainforge/triton.py), checked with
Triton's own ``model_config`` protobuf (tritonclient) against real ONNX exports of an
untrained yolov8n, read back by onnxruntime."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnxruntime
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from trainforge import triton
from trainforge.errors import InvalidRequest, NotFound

IMGSZ = 64


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """model.onnx of an untrained yolov8n: fixed batch 1, and dynamic up to batch 4."""
    from ultralytics.models.yolo.model import YOLO

    from jobs.export.convert import export_onnx

    work = tmp_path_factory.mktemp("onnx")
    YOLO("yolov8n.yaml").save(str(work / "best.pt"))
    return {
        "fixed": export_onnx(work / "best.pt", work / "fixed" / "model.onnx", imgsz=IMGSZ,
                             batch=1, dynamic=False, simplify=True, opset=None),
        "dynamic": export_onnx(work / "best.pt", work / "dynamic" / "model.onnx", imgsz=IMGSZ,
                               batch=4, dynamic=True, simplify=False, opset=None),
    }


def _version(tmp_path: Path, version: str, files: Mapping[str, Path | bytes], *,
             batch: int = 1, dynamic: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A version's manifest and its artifacts listing, each item's ``url`` a local path."""
    folder = tmp_path / "published" / version
    folder.mkdir(parents=True)
    items = []
    for name, source in files.items():
        path = folder / name
        if isinstance(source, bytes):
            path.write_bytes(source)
        else:
            shutil.copyfile(source, path)
        body = path.read_bytes()
        items.append({"name": name, "size": len(body),
                      "sha256": hashlib.sha256(body).hexdigest(), "url": str(path)})
    manifest = {"name": "ppe", "version": version, "input_shape": [batch, 3, IMGSZ, IMGSZ],
                "dynamic": dynamic, "artifacts": [dict(i) for i in items]}
    body = json.dumps(manifest).encode()
    (folder / "manifest.json").write_bytes(body)
    items.insert(0, {"name": "manifest.json", "size": len(body),
                     "sha256": hashlib.sha256(body).hexdigest(),
                     "url": str(folder / "manifest.json")})
    return manifest, items


class LocalFetch:
    """``fetch`` for write_repository: a checked copy, recording what it copied."""

    def __init__(self) -> None:
        self.copied: list[str] = []

    def __call__(self, item: Mapping[str, Any], target: Path) -> None:
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == \
                item["sha256"]:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item["url"], target)
        self.copied.append(str(item["name"]))


def _config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


_ORT_TO_TRITON = {"tensor(float)": model_config_pb2.TYPE_FP32,
                  "tensor(float16)": model_config_pb2.TYPE_FP16}


def _ort_dims(shape: list[Any]) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def _check_against_onnx(config: model_config_pb2.ModelConfig, onnx: Path, *,
                        batched: bool) -> None:
    """Every input and output of the ONNX file, as onnxruntime reads it, is in the config
    with its name, dtype and dims (less the batch dimension when Triton batches)."""
    session = onnxruntime.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    for configured, actual in ((config.input, session.get_inputs()),
                               (config.output, session.get_outputs())):
        assert [t.name for t in configured] == [t.name for t in actual]
        for tensor, real in zip(configured, actual, strict=True):
            assert tensor.data_type == _ORT_TO_TRITON[real.type]
            dims = _ort_dims(real.shape)
            assert list(tensor.dims) == (dims[1:] if batched else dims)


def test_a_fixed_batch_onnx_export(exports: dict[str, Path], tmp_path: Path) -> None:
    manifest, items = _version(tmp_path, "j1", {"model.onnx": exports["fixed"], "best.pt": b"w"})
    written = triton.write_repository(tmp_path / "repo", "ppe", manifest, items, LocalFetch())
    config = _config(tmp_path / "repo" / "ppe" / "config.pbtxt")
    assert (config.name, config.platform, config.max_batch_size) == ("ppe", "onnxruntime_onnx",
                                                                     0)
    _check_against_onnx(config, exports["fixed"], batched=False)
    assert list(config.input[0].dims) == [1, 3, IMGSZ, IMGSZ]
    version_dir = tmp_path / "repo" / "ppe" / "1"
    assert written.version_dir == version_dir and written.number == 1
    assert (version_dir / "model.onnx").read_bytes() == exports["fixed"].read_bytes()
    assert json.loads((version_dir / "manifest.json").read_text())["version"] == "j1"
    assert sorted(p.name for p in (tmp_path / "repo" / "ppe").iterdir()) == ["1",
                                                                               "config.pbtxt"]


def test_a_dynamic_export_batches_up_to_its_export_batch(exports: dict[str, Path],
                                                         tmp_path: Path) -> None:
    manifest, items = _version(tmp_path, "j1", {"model.onnx": exports["dynamic"]}, batch=4,
                               dynamic=True)
    triton.write_repository(tmp_path / "repo", "ppe", manifest, items, LocalFetch())
    config = _config(tmp_path / "repo" / "ppe" / "config.pbtxt")
    assert config.max_batch_size == 4
    _check_against_onnx(config, exports["dynamic"], batched=True)
    assert -1 in config.input[0].dims  # height and width are dynamic too


def test_a_tensorrt_engine_becomes_model_plan(exports: dict[str, Path], tmp_path: Path) -> None:
    # No TensorRT here: an engine file as Ultralytics writes one (a JSON header, then the
    # serialized engine, stood in for by known bytes).
    meta = json.dumps({"imgsz": [IMGSZ, IMGSZ], "batch": 1}).encode()
    engine = len(meta).to_bytes(4, "little") + meta + b"\x00serialized-engine\xff" * 64
    manifest, items = _version(tmp_path, "j1", {
        "model.onnx": exports["fixed"], "model-nvidia-h100-fp16.engine": engine,
        "model-nvidia-l4-fp16.engine": engine, "model-nvidia-l4-int8.engine": engine})
    repo = tmp_path / "repo"
    written = triton.write_repository(repo, "ppe", manifest, items, LocalFetch(),
                                      gpu="nvidia-h100")
    config = _config(repo / "ppe" / "config.pbtxt")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 0)
    _check_against_onnx(config, exports["fixed"], batched=False)
    assert (written.version_dir / "model.plan").read_bytes() == \
        b"\x00serialized-engine\xff" * 64
    assert not (written.version_dir / "model.onnx").exists()
    with pytest.raises(InvalidRequest, match="nvidia-l4-fp16 or nvidia-l4-int8"):
        triton.write_repository(repo, "ppe", manifest, items, LocalFetch(), gpu="nvidia-l4")
    with pytest.raises(NotFound, match="no TensorRT engine for GPU 'nvidia-a100'"):
        triton.write_repository(repo, "ppe", manifest, items, LocalFetch(), gpu="nvidia-a100")
    exact = triton.write_repository(repo, "ppe", manifest, items, LocalFetch(),
                                    gpu="nvidia-l4-int8")
    assert exact.number == 1  # the same trainforge version keeps its Triton version


def test_versions_are_numbered_and_a_repull_fetches_nothing(exports: dict[str, Path],
                                                             tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    first = _version(tmp_path, "j1", {"model.onnx": exports["fixed"]})
    second = _version(tmp_path, "j2", {"model.onnx": exports["fixed"]})
    assert triton.write_repository(repo, "ppe", *first, LocalFetch()).number == 1
    assert triton.write_repository(repo, "ppe", *second, LocalFetch()).number == 2
    again = LocalFetch()
    assert triton.write_repository(repo, "ppe", *first, again).number == 1
    assert again.copied == []
    with pytest.raises(InvalidRequest, match="holds version j1"):
        triton.write_repository(repo, "ppe", *second, LocalFetch(), number=1)
    assert not [p for p in (repo / "ppe").iterdir() if p.name.startswith(".")]


def test_a_version_without_onnx_cannot_be_served_from_onnx(tmp_path: Path) -> None:
    manifest, items = _version(tmp_path, "j1", {"best.pt": b"weights"})
    with pytest.raises(NotFound, match="has no model.onnx"):
        triton.write_repository(tmp_path / "repo", "ppe", manifest, items, LocalFetch())
