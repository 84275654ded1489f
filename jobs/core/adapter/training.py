"""Training through Ultralytics' own trainer: typed overrides, callbacks, checkpoints."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from jobs.core.adapter import distributed
from jobs.core.adapter.environment import private_settings
from jobs.core.adapter.epochs import EpochResult
from jobs.core.adapter.safety import check_weights, harden_loading, load_checked
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

#: TrainParams fields passed apart: ``augment`` flattened, ``plots`` as its own argument (a
#: sweep's trials never draw them, whatever the spec says).
_PASSED_APART = {"augment", "plots"}
_unknown = (set(TrainParams.model_fields) - _PASSED_APART) ^ set(TRAIN_ARGS)
_unknown |= set(Augment.model_fields) ^ set(AUGMENT_ARGS)
if _unknown:  # a spec field nobody maps would be silently ignored: refuse to import instead
    raise ImportError(f"jobs.core.adapter does not map spec fields {sorted(_unknown)}")


def device_for(gpus: int) -> str:
    """Ultralytics' ``device`` for a process holding ``gpus`` GPUs (indices are its own)."""
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


class TrainingHooks(Protocol):
    """What a caller learns while Ultralytics trains. Runs in the training process, and in a
    data-parallel run on rank 0 only (where Ultralytics validates and saves).

    A hooks object may also define ``on_train_start(run_dir: Path) -> None``: it runs once the
    trainer has written ``run_dir/args.yaml`` and before any data is loaded, so raising there
    refuses a run before it spends an epoch (the sweep checks each trial's arguments there);
    and ``on_epoch_elsewhere(epoch: int) -> None``, which runs on every other rank where rank 0
    runs :meth:`on_epoch` (for per-epoch steps every rank must take, such as Ray Train's
    report, a barrier).
    """

    def on_epoch(self, result: EpochResult) -> None: ...

    def on_checkpoint(self, epoch: int, last: Path, best: Path | None) -> None:
        """``last`` (and ``best`` when this epoch improved it) were just written."""
        ...


class _Callbacks:
    """Bridges Ultralytics' callback events to :class:`TrainingHooks`."""

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
        if distributed.world_rank() != 0:  # every rank runs this; only rank 0 has the metrics
            elsewhere = getattr(self.hooks, "on_epoch_elsewhere", None)
            if elsewhere is not None:
                elsewhere(int(trainer.epoch) + 1)
            return
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

    Raises:
        UnsafeWeights: ``model`` is a ``.pt`` file that :func:`check_weights` refuses (this
            process may have fetched it anew since the job's own pre-flight).
    """
    private_settings()
    harden_loading()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    args = dict(overrides)
    weights = str(args.pop("model"))
    if weights.endswith(".pt") and Path(weights).is_file():
        check_weights(Path(weights))
    if distributed.world_size() > 1:  # one rank of a Ray Train group: no torchrun of its own
        distributed.check_rank_constants()
        args["trainer"] = distributed.trainer_class()
    model = YOLO(weights)
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
    train_args: dict[str, Any] = field(default_factory=dict)  # the trainer's arguments


def read_checkpoint(path: Path) -> CheckpointInfo:
    """Read the progress a checkpoint records (without building the model).

    Raises:
        UnsafeWeights: it is not an Ultralytics detection checkpoint (see
            :func:`check_weights`, which this load is).
    """
    return _checkpoint_info(load_checked(path, str(path)))


def set_checkpoint_epochs(path: Path, epochs: int) -> CheckpointInfo:
    """Make a resumable checkpoint continue to ``epochs`` epochs in all (more or fewer than
    its run was asked for, never fewer than it holds).

    Ultralytics resumes with the arguments saved in the checkpoint (``train_args``) and
    ignores a new ``epochs`` on resume, so the checkpoint's own ``train_args["epochs"]`` is
    rewritten, in place and atomically. The resumed trainer then builds everything that
    depends on the total from the new one, as if the run had been asked for ``epochs`` from
    the start: the learning-rate schedule (linear or cosine from lr0 to lr0 × lrf over
    ``epochs``, taken up at the checkpoint's epoch), the warmup bound, the epoch mosaic
    closes (``close_mosaic`` before the end) and the last epoch. The optimizer's state, the
    EMA, the best fitness and the early-stopping counter carry on unchanged.

    Returns:
        What the rewritten checkpoint records.

    Raises:
        UnsafeWeights: it is not an Ultralytics detection checkpoint (the safe load refuses).
        ValueError: ``epochs`` is fewer than the epochs it holds.
    """
    ckpt = load_checked(path, str(path))
    info = _checkpoint_info(ckpt)
    if epochs < info.epoch:
        raise ValueError(f"{path} holds {info.epoch} epochs; it cannot continue to {epochs}")
    ckpt["train_args"] = {**(ckpt.get("train_args") or {}), "epochs": epochs}
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)
    return _checkpoint_info(ckpt)


def _checkpoint_info(ckpt: Mapping[str, Any]) -> CheckpointInfo:
    args = ckpt.get("train_args") or {}
    return CheckpointInfo(
        epoch=int(ckpt.get("epoch", -1)) + 1,
        epochs=int(args.get("epochs", 0)),
        resumable=ckpt.get("optimizer") is not None,
        results=dict(ckpt.get("train_results") or {}),
        train_args={k: v for k, v in args.items() if isinstance(v, str | int | float | bool)
                    or v is None},
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
    harden_loading()
    from ultralytics.utils.torch_utils import strip_optimizer

    strip_optimizer(path)


