"""The one module that talks to Ultralytics (the train and sweep jobs both use it).

* :func:`train_overrides` turns a job spec's typed ``train`` section into trainer arguments,
  key by key from an explicit list: no user dict reaches Ultralytics unchecked.
* :func:`read_effective_hyperparameters` reads back what a trainer really used (its
  ``args.yaml``), so a caller can prove a run matches its spec.
* :class:`TrainingHooks` receives per-epoch metrics and every saved checkpoint through
  Ultralytics' callbacks registry; the trainer itself is never subclassed or patched.
* :func:`evaluate` scores weights on one split (per-class AP and the confusion matrix).

Ultralytics is imported lazily: importing this module costs nothing, and
:func:`prepare_environment` must run before the first ``import ultralytics``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from trainforge.constants import ENV_YOLO_CONFIG_DIR, ENV_YOLO_OFFLINE
from trainforge.spec import Augment, TrainParams

log = logging.getLogger(__name__)

#: TrainParams fields, each passed to Ultralytics under the same name (the spec reuses
#: Ultralytics' names on purpose). ``augment`` is flattened from AUGMENT_ARGS.
TRAIN_ARGS: tuple[str, ...] = (
    "epochs", "imgsz", "batch", "patience", "optimizer", "lr0", "lrf", "momentum",
    "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr", "box", "cls", "dfl",
    "dropout", "cos_lr", "seed", "deterministic", "single_cls", "rect", "fraction", "freeze",
    "cache", "amp", "workers", "nbs",
)
#: Augment fields, passed under the same names.
AUGMENT_ARGS: tuple[str, ...] = (
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup", "copy_paste", "close_mosaic",
)
#: Ultralytics integrations that would otherwise activate from the user's settings file
#: (and, for raytune, report into a Ray session the job owns itself).
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
#: Ultralytics looks for this font in its config dir and otherwise fetches it from the internet.
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")

_unknown = (set(TrainParams.model_fields) - {"augment"}) ^ set(TRAIN_ARGS)
_unknown |= set(Augment.model_fields) ^ set(AUGMENT_ARGS)
if _unknown:  # a spec field nobody maps would be silently ignored: refuse to import instead
    raise ImportError(f"jobs.train.adapter does not map spec fields {sorted(_unknown)}")


def prepare_environment(config_dir: Path) -> None:
    """Make Ultralytics offline and self-contained; call before importing it.

    Points ``YOLO_CONFIG_DIR`` at ``config_dir`` (so the user's settings file cannot switch on
    integrations) and puts a font there so plots never try the network. Cheap: imports
    nothing; the settings are adjusted when training or evaluation starts.

    Args:
        config_dir: a directory owned by this job (created if missing).
    """
    os.environ[ENV_YOLO_OFFLINE] = "1"
    os.environ[ENV_YOLO_CONFIG_DIR] = str(config_dir)
    font_dir = config_dir / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    source = _bundled_font()
    for name in _FONTS:
        target = font_dir / name
        if source is not None and not target.exists():
            # DejaVu Sans ships with matplotlib; any TrueType font serves Ultralytics' labels.
            shutil.copyfile(source, target)


def _private_settings() -> None:
    """Turn integrations, usage events and shared run/weights dirs off in our own settings."""
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    config_dir = os.environ.get(ENV_YOLO_CONFIG_DIR)
    if not config_dir or Path(USER_CONFIG_DIR).resolve() != (Path(config_dir) / "Ultralytics"
                                                             ).resolve():
        log.warning("ultralytics settings in %s are not private to this job "
                    "(prepare_environment() ran after importing ultralytics); left untouched",
                    USER_CONFIG_DIR)
        return
    wanted = {**dict.fromkeys(_INTEGRATIONS, False), "sync": False,
              "runs_dir": str(Path(config_dir) / "runs"),
              "weights_dir": str(Path(config_dir) / "weights")}
    settings: Any = SETTINGS  # Ultralytics' settings manager is untyped
    if any(settings.get(k) != v for k, v in wanted.items()):
        settings.update(wanted)


def _bundled_font() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None


def device_for(gpus: int) -> str:
    """Ultralytics' ``device`` for a worker holding ``gpus`` GPUs (indices are worker-local)."""
    return ",".join(str(i) for i in range(gpus)) if gpus > 0 else "cpu"


def spec_hyperparameters(train: TrainParams) -> dict[str, Any]:
    """The spec's hyperparameters as one flat mapping of Ultralytics argument names."""
    values: dict[str, Any] = {name: getattr(train, name) for name in TRAIN_ARGS}
    values.update({name: getattr(train.augment, name) for name in AUGMENT_ARGS})
    return values


def train_overrides(
    train: TrainParams,
    *,
    data_yaml: Path,
    model: str,
    run_dir: Path,
    device: str,
    plots: bool = True,
) -> dict[str, Any]:
    """Trainer arguments for a fresh run.

    Args:
        train: the spec's ``train`` section.
        data_yaml: a data.yaml with local paths.
        model: base weights (.pt path) or a model YAML (training from scratch).
        run_dir: where the run writes args.yaml, results.csv, plots and weights/.
        device: see :func:`device_for`.
        plots: write plots (PNG) beside the results.

    Returns:
        Keyword arguments for ``YOLO(model).train``.
    """
    return {
        **spec_hyperparameters(train),
        "model": model,
        "data": str(data_yaml),
        "device": device,
        "plots": plots,
        "save_dir": str(run_dir),
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "exist_ok": True,
        "val": True,
        "save": True,
        "verbose": True,
    }


def resume_overrides(*, data_yaml: Path, run_dir: Path, device: str,
                     plots: bool = True) -> dict[str, Any]:
    """Trainer arguments that continue a checkpoint on this node.

    Hyperparameters come from the checkpoint itself (Ultralytics refuses to change them on
    resume); only node-local things are replaced: the data.yaml, the run directory and the
    device.
    """
    return {"resume": True, "data": str(data_yaml), "save_dir": str(run_dir),
            "device": device, "plots": plots}


def read_effective_hyperparameters(run_dir: Path) -> dict[str, Any]:
    """What the trainer used, read from the ``args.yaml`` it wrote into ``run_dir``.

    Returns:
        The same keys as :func:`spec_hyperparameters`.

    Raises:
        FileNotFoundError: ``run_dir`` has no args.yaml (the trainer never started).
    """
    args = yaml.safe_load((run_dir / "args.yaml").read_text())
    return {name: args.get(name) for name in (*TRAIN_ARGS, *AUGMENT_ARGS)}


def hyperparameter_mismatches(train: TrainParams, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """``{name: (spec value, trainer value)}`` for every hyperparameter that differs."""
    used = read_effective_hyperparameters(run_dir)
    return {name: (want, used[name]) for name, want in spec_hyperparameters(train).items()
            if used[name] != want}


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch (1-based) and its metrics under Ultralytics' names."""

    epoch: int
    epochs: int
    metrics: dict[str, float]


class TrainingHooks(Protocol):
    """What a caller learns while Ultralytics trains. Runs in the training process (rank 0).

    A hooks object may also define ``on_train_start(run_dir: Path) -> None``: it runs once the
    trainer has written ``run_dir/args.yaml`` and before any data is loaded, so raising there
    refuses a run before it spends an epoch (the sweep checks each trial's arguments there).
    """

    def on_epoch(self, result: EpochResult) -> None: ...

    def on_checkpoint(self, epoch: int, last: Path, best: Path | None) -> None:
        """``last`` (and ``best`` when this epoch improved it) were just written."""
        ...


class _Callbacks:
    """Bridges Ultralytics' callback events to :class:`TrainingHooks`.

    Holds only the hooks object, so it pickles into Ultralytics' multi-GPU worker processes.
    """

    def __init__(self, hooks: TrainingHooks) -> None:
        self.hooks = hooks
        self._train_started = 0.0
        self._train_seconds = 0.0
        self._epoch_pending = False

    def register(self, model: Any) -> None:
        model.add_callback("on_pretrain_routine_start", self.on_pretrain_routine_start)
        model.add_callback("on_train_epoch_start", self.on_train_epoch_start)
        model.add_callback("on_train_epoch_end", self.on_train_epoch_end)
        model.add_callback("on_model_save", self.on_model_save)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)

    def on_pretrain_routine_start(self, trainer: Any) -> None:
        start = getattr(self.hooks, "on_train_start", None)
        if start is not None:
            start(Path(trainer.save_dir))

    def on_train_epoch_start(self, trainer: Any) -> None:
        self._train_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Any) -> None:
        self._train_seconds = time.perf_counter() - self._train_started
        # on_fit_epoch_end also fires once more for the final evaluation of best.pt;
        # only an epoch that actually trained is reported.
        self._epoch_pending = True

    def on_model_save(self, trainer: Any) -> None:
        improved = trainer.best_fitness is not None and trainer.best_fitness == trainer.fitness
        self.hooks.on_checkpoint(int(trainer.epoch) + 1, Path(trainer.last),
                                 Path(trainer.best) if improved else None)

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if not self._epoch_pending:
            return
        self._epoch_pending = False
        values: dict[str, Any] = {
            **trainer.label_loss_items(trainer.tloss, prefix="train"),
            **(trainer.metrics or {}),
            **getattr(trainer, "lr", {}),
        }
        if trainer.epoch_time:
            values["epoch_seconds"] = trainer.epoch_time
        images = len(trainer.train_loader.dataset)
        if self._train_seconds > 0:
            values["images_per_second"] = images / self._train_seconds
        metrics = {k: float(v) for k, v in values.items() if _finite(v)}
        self.hooks.on_epoch(EpochResult(int(trainer.epoch) + 1, int(trainer.epochs), metrics))


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class RunOutputs:
    """Files of a finished Ultralytics run."""

    run_dir: Path
    best: Path
    last: Path
    results_csv: Path

    def plots(self) -> list[Path]:
        return sorted(p for p in self.run_dir.iterdir() if p.suffix in {".png", ".jpg"})


def train(overrides: Mapping[str, Any], hooks: TrainingHooks) -> RunOutputs:
    """Run Ultralytics training (fresh or resumed) with ``hooks`` registered.

    Args:
        overrides: from :func:`train_overrides` or :func:`resume_overrides`; a resumed run's
            checkpoint is given as ``model``.
        hooks: receives per-epoch metrics and checkpoints.

    Returns:
        The run's files.
    """
    _private_settings()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    args = dict(overrides)
    model = YOLO(args.pop("model"))
    _Callbacks(hooks).register(model)
    model.train(**args)
    trainer: Any = model.trainer
    run_dir = Path(trainer.save_dir)
    return RunOutputs(run_dir, Path(trainer.best), Path(trainer.last), run_dir / "results.csv")


@dataclass(frozen=True)
class CheckpointInfo:
    """What a resumable last.pt says about the run that wrote it."""

    epoch: int  # epochs completed (1-based)
    epochs: int  # epochs the run was asked for
    resumable: bool  # still holds optimizer state
    results: dict[str, list[Any]] = field(default_factory=dict)  # results.csv columns


def read_checkpoint(path: Path) -> CheckpointInfo:
    """Read the progress a checkpoint records (without building the model)."""
    from ultralytics.utils.patches import torch_load

    load: Any = torch_load  # untyped
    ckpt = load(path, map_location="cpu")
    args = ckpt.get("train_args") or {}
    return CheckpointInfo(
        epoch=int(ckpt.get("epoch", -1)) + 1,
        epochs=int(args.get("epochs", 0)),
        resumable=ckpt.get("optimizer") is not None,
        results=dict(ckpt.get("train_results") or {}),
    )


def write_results_csv(results: Mapping[str, list[Any]], dest: Path) -> None:
    """Recreate Ultralytics' results.csv from the columns a checkpoint carries.

    A resumed run appends to results.csv; on a new node the file is rebuilt from last.pt so
    that exactly the epochs the checkpoint holds precede the resumed ones.
    """
    keys = list(results)
    rows = zip(*(results[k] for k in keys), strict=True)
    lines = [",".join(keys)]
    lines += [",".join(_csv_value(v) for v in row) for row in rows]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines) + "\n")


def _csv_value(value: Any) -> str:
    return "%.6g" % value if isinstance(value, int | float) else str(value)  # noqa: UP031


def finalize_checkpoint(path: Path) -> None:
    """Drop optimizer state from a checkpoint (what Ultralytics does at the end of a run)."""
    from ultralytics.utils.torch_utils import strip_optimizer

    strip_optimizer(path)


@dataclass(frozen=True)
class Evaluation:
    """Scores of one set of weights on one split (numbers only; plots stay files)."""

    split: str
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion_matrix: dict[str, Any]
    speed_ms: dict[str, float]
    plots: list[Path]

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "metrics": self.metrics,
            "per_class": self.per_class,
            "confusion_matrix": self.confusion_matrix,
            "speed_ms_per_image": self.speed_ms,
            "plots": [p.name for p in self.plots],
        }


def evaluate(
    weights: Path,
    data_yaml: Path,
    *,
    split: str,
    imgsz: int,
    batch: int,
    device: str,
    out_dir: Path,
    plots: bool = True,
) -> Evaluation:
    """Score ``weights`` on ``split`` of the dataset.

    Args:
        weights: a .pt checkpoint.
        data_yaml: a data.yaml with local paths.
        split: "test" or "val".
        imgsz, batch, device: as in training.
        out_dir: where plots (confusion matrix, PR curves) go.
        plots: write them.

    Returns:
        Mean and per-class precision, recall, AP50 and AP50-95, and the confusion matrix.
    """
    _private_settings()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    model = YOLO(str(weights))
    result = model.val(data=str(data_yaml), split=split, imgsz=imgsz, batch=batch, device=device,
                       plots=plots, project=str(out_dir.parent), name=out_dir.name,
                       exist_ok=True, verbose=True)
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
        split=split,
        metrics={"precision": float(box.mp), "recall": float(box.mr),
                 "mAP50": float(box.map50), "mAP50-95": float(box.map)},
        per_class=per_class,
        confusion_matrix={"labels": labels, "rows": "predicted", "columns": "true",
                          "matrix": [[int(v) for v in row] for row in matrix]},
        speed_ms={k: float(v) for k, v in result.speed.items()},
        plots=sorted(p for p in out_dir.glob("*.png")) if plots and out_dir.is_dir() else [],
    )
