"""What an export found per format, and the gate that decides what gets published."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainforge.spec import ExportGates

Status = Literal["passed", "failed", "skipped"]

#: Format keys in report.json, the manifest and the ``format`` metric label.
ONNX = "onnx"


def engine_key(precision: str) -> str:
    return f"engine-{precision}"


def threshold_for(key: str, gates: ExportGates) -> float:
    """Largest |Δ mAP50-95| allowed for a format key.

    An FP32 engine is held to the ONNX tolerance: like ONNX it changes no arithmetic precision.
    """
    if key == engine_key("fp16"):
        return gates.fp16
    if key == engine_key("int8"):
        return gates.int8
    return gates.onnx


@dataclass
class FormatResult:
    """One exported format: its file, its numbers, and whether it may be published."""

    key: str
    status: Status = "skipped"
    reason: str = ""
    artifact: str | None = None
    #: Local file; not part of the report.
    path: Path | None = field(default=None, compare=False)
    bytes: int | None = None
    sha256: str | None = None
    device: str | None = None
    threshold: float | None = None
    map50_95: float | None = None
    map50: float | None = None
    reference_map50_95: float | None = None
    reference_map50: float | None = None
    #: This format's mAP50-95 minus best.pt's, evaluated like for like.
    map_delta: float | None = None
    #: Forward-pass latency (seconds): p50, p95, mean, runs, batch, device, threads.
    latency: dict[str, Any] | None = None
    reference_latency: dict[str, Any] | None = None
    export_seconds: float | None = None

    def judge(self) -> None:
        """Set ``status`` from the measured Δ mAP50-95 and the threshold."""
        if self.map_delta is None or self.threshold is None:
            raise ValueError(f"{self.key}: judge() needs map_delta and threshold")
        if abs(self.map_delta) <= self.threshold:
            self.status, self.reason = "passed", ""
        else:
            self.status = "failed"
            self.reason = (f"|Δ mAP50-95| = {abs(self.map_delta):.4f} exceeds the gate "
                           f"{self.threshold:.4f} (mAP50-95 {self.map50_95:.4f} vs best.pt "
                           f"{self.reference_map50_95:.4f})")

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FormatResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "path"}
        return cls(**known)
