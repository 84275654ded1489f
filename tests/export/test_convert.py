"""ONNX export honours the requested opset, batch and dynamic axes (or refuses)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from jobs.export.convert import check_onnx, export_onnx
from trainforge.errors import ExportError


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ultralytics.models.yolo.model import YOLO

    path = tmp_path_factory.mktemp("w") / "best.pt"
    YOLO("yolov8n.yaml").save(str(path))
    return path


def _input_dims(path: Path) -> list[int | str]:
    model = onnx.load(str(path))
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def test_fixed_batch_and_opset_are_what_was_asked(untrained: Path, tmp_path: Path) -> None:
    out = export_onnx(untrained, tmp_path / "model.onnx", imgsz=64, batch=2, dynamic=False,
                      simplify=True, opset=17)
    assert _input_dims(out) == [2, 3, 64, 64]
    assert {o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")} \
        == {17}
    with pytest.raises(ExportError, match=r"input shape \[2, 3, 64, 64\] instead of"):
        check_onnx(out, imgsz=96, batch=2, dynamic=False, opset=17)
    with pytest.raises(ExportError, match="opset 17 instead of 13"):
        check_onnx(out, imgsz=64, batch=2, dynamic=False, opset=13)


def test_dynamic_export_has_a_symbolic_batch(untrained: Path, tmp_path: Path) -> None:
    out = export_onnx(untrained, tmp_path / "model.onnx", imgsz=64, batch=4, dynamic=True,
                      simplify=False, opset=None)
    assert isinstance(_input_dims(out)[0], str)
    assert not (tmp_path / ".stage-onnx").exists()
