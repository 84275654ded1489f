"""Scores of weights on one split (per-class AP, confusion matrix), through ``YOLO.val``."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs.core.adapter import distributed
from jobs.core.adapter.environment import private_settings
from jobs.core.adapter.failures import raised_as
from jobs.core.adapter.safety import harden_loading
from trainforge.errors import TrainforgeError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes a mAP besides the weights; :func:`evaluate` passes each to
    Ultralytics explicitly and checks it was used, so two evaluations with equal settings are
    like for like (best.pt against an export, a challenger against a champion)."""

    data_yaml: Path
    split: str
    imgsz: int
    batch: int
    device: str
    conf: float = 0.001
    iou: float = 0.7
    #: ``YOLO.val`` defaults to rectangular batches; exports are checked square (rect False).
    rect: bool = True
    #: Dataloader workers (None: Ultralytics' default); does not change the scores.
    workers: int | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("workers")
        data["data_yaml"] = str(self.data_yaml)
        return data


class SettingsChanged(Exception):
    """Ultralytics evaluated with other settings than asked: not like for like."""


@dataclass(frozen=True)
class Evaluation:
    """Scores of one set of weights on one split (numbers only; plots stay files)."""

    split: str
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion_matrix: dict[str, Any]
    speed_ms: dict[str, float]
    plots: list[Path]
    images: int = 0
    seconds: float = 0.0

    @property
    def map50_95(self) -> float:
        return self.metrics["mAP50-95"]

    @property
    def map50(self) -> float:
        return self.metrics["mAP50"]

    def to_dict(self) -> dict[str, Any]:
        """report.json's ``evaluation`` section."""
        return {
            "split": self.split,
            "metrics": self.metrics,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix,
            "speed_ms_per_image": self.speed_ms,
            "plots": [p.name for p in self.plots],
        }

    def accuracy_json(self) -> dict[str, Any]:
        """The overall scores, image count and duration (an export gate's reference)."""
        return {"map50_95": self.map50_95, "map50": self.map50,
                "precision": self.metrics["precision"], "recall": self.metrics["recall"],
                "images": self.images, "seconds": self.seconds}


def evaluate(weights: Path, settings: EvalSettings, out_dir: Path, *, plots: bool = False,
             verbose: bool = False,
             failure: type[TrainforgeError] | None = None) -> Evaluation:
    """Score a model file (best.pt, model.onnx, an engine) on ``settings.split``.

    Args:
        weights: the model file.
        settings: the evaluation settings, each passed explicitly.
        out_dir: Ultralytics' val folder (plots: confusion matrix, PR curves).
        plots: write them.
        verbose: print Ultralytics' per-class table into the job log.
        failure: the trainforge error a failure of Ultralytics becomes
            (``evaluating <file> failed: …``); None lets it propagate, which the job runtime
            reports as an unexpected error.

    Returns:
        Mean and per-class precision, recall, AP50 and AP50-95, and the confusion matrix.

    Raises:
        SettingsChanged: Ultralytics used other settings than ``settings``.
        TrainforgeError: ``failure``, when Ultralytics failed.
    """
    if failure is None:
        return _evaluate(weights, settings, out_dir, plots=plots, verbose=verbose)
    with raised_as(failure, f"evaluating {weights.name} failed", keep=(SettingsChanged,)):
        return _evaluate(weights, settings, out_dir, plots=plots, verbose=verbose)


def _evaluate(weights: Path, settings: EvalSettings, out_dir: Path, *, plots: bool,
              verbose: bool) -> Evaluation:
    private_settings()
    harden_loading()
    from ultralytics.models.yolo.model import YOLO

    model = YOLO(str(weights), task="detect")
    seen: dict[str, Any] = {}

    def capture(validator: Any) -> None:
        seen["args"] = validator.args
        seen["device"] = str(validator.device)
        seen["images"] = len(validator.dataloader.dataset)

    model.add_callback("on_val_end", capture)
    extra: dict[str, Any] = {} if settings.workers is None else {"workers": settings.workers}
    if not plots:
        # Ultralytics fills the confusion matrix only with plots on: keep them on for the
        # counting and let this validator draw nothing.
        extra["validator"] = _undrawn_validator()
    started = time.perf_counter()
    with distributed.single_process():  # rank 0 of a finished data-parallel run: alone now
        result = model.val(
            data=str(settings.data_yaml), split=settings.split, imgsz=settings.imgsz,
            batch=settings.batch, conf=settings.conf, iou=settings.iou, rect=settings.rect,
            device=settings.device, plots=True, save_json=False, verbose=verbose,
            project=str(out_dir.parent), name=out_dir.name, exist_ok=True, **extra)
    seconds = time.perf_counter() - started
    _check_like_for_like(settings, seen)
    box = result.box
    names: dict[int, str] = dict(result.names)
    present = {int(c): i for i, c in enumerate(box.ap_class_index)}
    per_class = []
    for cls, name in sorted(names.items()):
        row: dict[str, Any] = {
            "class_id": cls,
            "name": name,
            "images": int(result.nt_per_image[cls]),
            "instances": int(result.nt_per_class[cls]),
        }
        i = present.get(cls)
        # A class with no instances in this split has no AP: null, not a made-up number.
        row.update({
            "precision": float(box.p[i]) if i is not None else None,
            "recall": float(box.r[i]) if i is not None else None,
            "AP50": float(box.ap50[i]) if i is not None else None,
            "AP50-95": float(box.ap[i]) if i is not None else None,
        })
        per_class.append(row)
    labels = [names[c] for c in sorted(names)] + ["background"]
    matrix = result.confusion_matrix.matrix
    return Evaluation(
        split=settings.split,
        metrics={"precision": float(box.mp), "recall": float(box.mr),
                 "mAP50": float(box.map50), "mAP50-95": float(box.map)},
        per_class=per_class,
        confusion_matrix={"labels": labels, "rows": "predicted", "columns": "true",
                          "matrix": [[int(v) for v in row] for row in matrix]},
        speed_ms={k: float(v) for k, v in result.speed.items()},
        plots=sorted(p for p in out_dir.glob("*.png")) if plots and out_dir.is_dir() else [],
        images=int(seen["images"]),
        seconds=seconds,
    )


def _undrawn_validator() -> type[Any]:
    """Ultralytics' detection validator, counting every batch into the confusion matrix
    (which it does only while ``args.plots`` is on) but drawing nothing: no batch images, no
    curves, no matrix PNGs. Drawing them costs as much as a small CPU evaluation itself."""
    from ultralytics.models.yolo.detect import DetectionValidator

    class UndrawnValidator(DetectionValidator):
        def plot_val_samples(self, batch: dict[str, Any], ni: int) -> None:
            return None

        def plot_predictions(self, batch: dict[str, Any], preds: list[dict[str, Any]], ni: int,
                             max_det: int | None = None) -> None:
            return None

        def get_stats(self) -> dict[str, Any]:
            # Every batch is counted by now; curves (here) and the matrix (finalize_metrics)
            # are drawn only while plots is on.
            self.args.plots = False
            stats: dict[str, Any] = super().get_stats()
            return stats

    return UndrawnValidator


def _check_like_for_like(settings: EvalSettings, seen: dict[str, Any]) -> None:
    if "args" not in seen:
        raise SettingsChanged("Ultralytics did not report its settings")
    args = seen["args"]
    imgsz = args.imgsz if isinstance(args.imgsz, list | tuple) else [args.imgsz, args.imgsz]
    used = {"split": args.split, "imgsz": [int(v) for v in imgsz], "batch": int(args.batch),
            "conf": float(args.conf), "iou": float(args.iou), "rect": bool(args.rect)}
    wanted = {"split": settings.split, "imgsz": [settings.imgsz, settings.imgsz],
              "batch": settings.batch, "conf": settings.conf, "iou": settings.iou,
              "rect": settings.rect}
    changed = {k: (wanted[k], used[k]) for k in wanted if wanted[k] != used[k]}
    device = seen["device"]
    if (settings.device == "cpu") != (device == "cpu"):
        changed["device"] = (settings.device, device)
    if changed:
        raise SettingsChanged("Ultralytics used " + ", ".join(
            f"{k}={b!r} instead of {a!r}" for k, (a, b) in changed.items()))
