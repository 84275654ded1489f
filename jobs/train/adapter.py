"""The one module that talks to Ultralytics (the train, sweep and export jobs all use it).

* :func:`train_overrides` turns a job spec's typed ``train`` section into trainer arguments,
  key by key from an explicit list: no user dict reaches Ultralytics unchecked.
* :func:`read_effective_hyperparameters` reads back what a trainer really used (its
  ``args.yaml``), so a caller can prove a run matches its spec.
* :class:`TrainingHooks` receives per-epoch metrics and every saved checkpoint through
  Ultralytics' callbacks registry; the trainer itself is never subclassed or patched
  (:func:`harden_loading` replaces a few of Ultralytics' loading functions, listed there).
* :func:`evaluate` scores weights on one split (per-class AP and the confusion matrix).
* :func:`harden_loading` and :func:`check_weights`: how weights and dataset files are read.

Loading is hardened because a ``.pt`` file is a pickle, and the user chooses ``model.base``
(``file://``, ``s3://``, ``registry://``, a plain path): Ultralytics loads checkpoints with
``torch.load(weights_only=False)``, so a crafted file used to run its own code inside the job
(and could read the job's secrets). :func:`harden_loading` runs in every job process before
Ultralytics loads anything (each function here calls it; Ray Train workers, Ray Tune trials
and Ultralytics' multi-GPU ranks are processes of their own and call it too):

* ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``: torch reads it at every ``torch.load`` and then uses its
  restricted unpickler whatever the caller passed, so Ultralytics' ``weights_only=False``
  is overridden everywhere without patching its loaders one by one.
* an explicit allow-list, :data:`SAFE_GLOBALS` (plus the renames in
  :data:`SAFE_GLOBAL_ALIASES`): the classes a genuine Ultralytics detection checkpoint
  references beyond torch's own tensors and containers, and nothing that can run code
  (no builtins such as ``eval``/``getattr``, no ``os``/``subprocess``/``functools``).
* model YAMLs (a checkpoint carries one, and Ultralytics rebuilds the model from it when it
  fine-tunes) are parsed in Ultralytics' restricted mode: by default it passes the YAML's
  ``activation`` string to ``eval()``, which would run code from a checkpoint that passed the
  allow-list.
* Ultralytics' ``*.cache`` label caches are never read or written: they are pickles
  (``np.load(allow_pickle=True)``) written next to the labels, i.e. into the node's shared
  dataset cache (or the user's own dataset directory), where a planted one would run code in
  every later job on that dataset. Refusing to load one reads as "no cache yet" to Ultralytics,
  which re-scans the label files (a fraction of a second per thousand images).

:func:`check_weights` is the pre-flight a job runs on its base weights before anything else
loads them: a file that references anything outside the allow-list, or that holds no
Ultralytics detection model, fails the job with :class:`~trainforge.errors.UnsafeWeights`
(``weights_unsafe``), naming what it references.

Ultralytics is imported lazily: importing this module costs nothing, and
:func:`prepare_environment` must run before the first ``import ultralytics``.
"""

from __future__ import annotations

import ast
import importlib
import io
import logging
import math
import os
import pickle
import re
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from trainforge.constants import ENV_YOLO_CONFIG_DIR, ENV_YOLO_OFFLINE
from trainforge.errors import UnsafeWeights, WeightsError
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


# --- Safe loading -------------------------------------------------------------------------------

#: torch reads these at every ``torch.load`` (torch/serialization.py): the first forces its
#: restricted unpickler even where the caller passed ``weights_only=False``; the second would
#: undo that for callers that pass nothing, and both together make every load fail.
_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"

#: Globals a genuine Ultralytics detection checkpoint references beyond torch's own weights_only
#: defaults (tensors, storages, OrderedDict, set…). Derived, not guessed: the union of
#: ``torch.serialization.get_unsafe_globals_in_checkpoint`` over (a) every detection model YAML
#: Ultralytics ships (v3, v5, v6, v8 incl. ghost/p2/p6, v9, v10, 11, 12, 26 incl. p2/p6; every
#: scale) built and saved as a checkpoint, and (b) checkpoints of real CPU trainings (yolov8n,
#: yolo11n, yolo12n, yolo26n, yolov10n from their YAMLs): ``last.pt`` mid-run with optimizer
#: state, the stripped ``best.pt``/``last.pt`` of a finished run, a fine-tuned run and a
#: resumed one. tests/security/test_weights_allowlist.py re-derives (a) against the installed
#: Ultralytics, so an upgrade that adds a layer fails there, not in a job.
SAFE_GLOBALS: tuple[str, ...] = (
    # torch.nn layers the Ultralytics blocks are made of
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.batchnorm.BatchNorm2d",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.conv.Conv2d",
    "torch.nn.modules.conv.ConvTranspose2d",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.padding.ZeroPad2d",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
    # Ultralytics blocks, convolutions and heads of its detection models
    "ultralytics.nn.modules.block.A2C2f",
    "ultralytics.nn.modules.block.AAttn",
    "ultralytics.nn.modules.block.ABlock",
    "ultralytics.nn.modules.block.AConv",
    "ultralytics.nn.modules.block.ADown",
    "ultralytics.nn.modules.block.Attention",
    "ultralytics.nn.modules.block.Bottleneck",
    "ultralytics.nn.modules.block.C2",
    "ultralytics.nn.modules.block.C2PSA",
    "ultralytics.nn.modules.block.C2f",
    "ultralytics.nn.modules.block.C2fCIB",
    "ultralytics.nn.modules.block.C3",
    "ultralytics.nn.modules.block.C3Ghost",
    "ultralytics.nn.modules.block.C3k",
    "ultralytics.nn.modules.block.C3k2",
    "ultralytics.nn.modules.block.CBFuse",
    "ultralytics.nn.modules.block.CBLinear",
    "ultralytics.nn.modules.block.CIB",
    "ultralytics.nn.modules.block.DFL",
    "ultralytics.nn.modules.block.ELAN1",
    "ultralytics.nn.modules.block.GhostBottleneck",
    "ultralytics.nn.modules.block.PSA",
    "ultralytics.nn.modules.block.PSABlock",
    "ultralytics.nn.modules.block.RepBottleneck",
    "ultralytics.nn.modules.block.RepCSP",
    "ultralytics.nn.modules.block.RepNCSPELAN4",
    "ultralytics.nn.modules.block.RepVGGDW",
    "ultralytics.nn.modules.block.SCDown",
    "ultralytics.nn.modules.block.SPP",
    "ultralytics.nn.modules.block.SPPELAN",
    "ultralytics.nn.modules.block.SPPF",
    "ultralytics.nn.modules.conv.Concat",
    "ultralytics.nn.modules.conv.Conv",
    "ultralytics.nn.modules.conv.DWConv",
    "ultralytics.nn.modules.conv.GhostConv",
    "ultralytics.nn.modules.conv.RepConv",
    "ultralytics.nn.modules.head.Detect",
    "ultralytics.nn.modules.head.v10Detect",
    "ultralytics.nn.tasks.DetectionModel",
    # a mid-run checkpoint's model.args (the trainer's arguments)
    "ultralytics.utils.IterableSimpleNamespace",
    # paths in train_args of checkpoints trained outside trainforge (``data=Path(...)``)
    "pathlib.PosixPath",
    # numpy floats (best_fitness, metrics) in checkpoints of earlier Ultralytics releases: the
    # data globals Ultralytics' own safe-load list (nn/tasks.py, _SafeLoad) names for official
    # checkpoints; only numeric scalars are rebuilt from them.
    "numpy._core.multiarray.scalar",
    "numpy.dtype",
    "numpy.dtypes.Float64DType",
    "numpy.dtypes.Float32DType",
)
#: Names under which older releases, other platforms or older numpy pickled an allowed global
#: → the allowed global they load as (each target is in SAFE_GLOBALS: no new capability).
SAFE_GLOBAL_ALIASES: dict[str, str] = {
    "ultralytics.yolo.utils.IterableSimpleNamespace": "ultralytics.utils.IterableSimpleNamespace",
    "ultralytics.nn.modules.block.Silence": "torch.nn.modules.linear.Identity",  # YOLOv9e
    "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",
    "pathlib.WindowsPath": "pathlib.PosixPath",
    "pathlib._local.PosixPath": "pathlib.PosixPath",  # Python 3.13 pickles paths there
    "pathlib._local.WindowsPath": "pathlib.PosixPath",
    "numpy.core.multiarray.scalar": "numpy._core.multiarray.scalar",  # numpy < 2
}
#: Appended to every refusal: what trainforge does load.
_LOADS_ONLY = ("trainforge loads only Ultralytics checkpoints (torch weights_only with an "
               "allow-list)")
#: At most this many refused globals are named in one message.
_NAMED = 8

_harden_lock = threading.Lock()
_hardened = False


def harden_loading() -> None:
    """Make every weights load of this process a safe load; idempotent and cheap after the first.

    Forces torch's weights-only unpickler (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``), registers
    :data:`SAFE_GLOBALS`, makes Ultralytics parse model YAMLs without ``eval`` and never read
    or write ``*.cache`` label caches (see the module docstring for why), then proves on an
    in-memory pickle that torch really refuses a global outside the list. Call it after
    :func:`prepare_environment` (it imports Ultralytics) and before anything loads weights.

    What it replaces in Ultralytics, process-wide: ``load_dataset_cache_file`` and
    ``save_dataset_cache_file`` (in ``ultralytics.data.dataset``, which imported them by name,
    and ``ultralytics.data.utils``); ``ultralytics.nn.tasks._SafeLoad.restricted`` (always
    true) and ``ultralytics.nn.tasks.SAFE_LOAD`` (false); and it wraps
    ``ultralytics.engine.trainer.generate_ddp_command`` (see :func:`_ddp_command`).

    Raises:
        RuntimeError: this torch or Ultralytics lacks what the hardening relies on; the job must
            not run unprotected.
    """
    global _hardened
    # Set on every call: the environment is the process's, and anyone may have changed it.
    os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    with _harden_lock:
        if _hardened:
            return
        import torch

        allowed: list[Any] = _allow_list()
        torch.serialization.add_safe_globals(allowed)
        _patch_ultralytics()
        _prove_weights_only(torch)
        _hardened = True
    log.info("weights loading hardened: torch weights_only with %d allowed globals; "
             "dataset caches off; model YAMLs parsed without eval",
             len(SAFE_GLOBALS) + len(SAFE_GLOBAL_ALIASES))


def _resolve_global(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        # A moved class must fail loudly: a silently shorter list would refuse genuine weights.
        raise RuntimeError(f"allowed global {name} does not exist in this environment ({exc}); "
                           "update jobs/train/adapter.py SAFE_GLOBALS") from None


def _allow_list() -> list[tuple[Any, str]]:
    """(object, pickled name) pairs for ``add_safe_globals``: explicit names, never guessed from
    the object (numpy's scalar, for one, reports another module than it is pickled under)."""
    pairs = [(_resolve_global(name), name) for name in SAFE_GLOBALS]
    pairs += [(_resolve_global(target), pickled)
              for pickled, target in SAFE_GLOBAL_ALIASES.items()]
    return pairs


def _patch_ultralytics() -> None:
    """Replace the Ultralytics functions that would unpickle or eval what a user controls."""
    import ultralytics.data.dataset
    import ultralytics.data.utils
    import ultralytics.engine.trainer
    import ultralytics.nn.tasks

    # Untyped modules: their attributes are replaced, which their (partial) stubs do not allow.
    ul_dataset: Any = ultralytics.data.dataset
    ul_data_utils: Any = ultralytics.data.utils
    ul_trainer: Any = ultralytics.engine.trainer
    ul_tasks: Any = ultralytics.nn.tasks
    safe_load: Any = getattr(ul_tasks, "_SafeLoad", None)
    missing = [name for module, name in (
        (ul_dataset, "load_dataset_cache_file"), (ul_dataset, "save_dataset_cache_file"),
        (ul_data_utils, "load_dataset_cache_file"), (ul_data_utils, "save_dataset_cache_file"),
        (ul_trainer, "generate_ddp_command"), (ul_tasks, "SAFE_LOAD"),
    ) if not hasattr(module, name)]
    if safe_load is None or not hasattr(safe_load, "restricted"):
        missing.append("ultralytics.nn.tasks._SafeLoad.restricted")
    if missing:
        raise RuntimeError(f"cannot harden Ultralytics loading: this version lacks {missing}")
    # dataset.py imported both functions by name: replace them there, where they are called,
    # and in data.utils for any other caller.
    for module in (ul_dataset, ul_data_utils):
        module.load_dataset_cache_file = _no_dataset_cache
        module.save_dataset_cache_file = _skip_dataset_cache
    # Ultralytics' restricted mode builds a model from its YAML without eval() and with
    # nn.Module layers only; normally it is on only inside its own opt-in safe load.
    safe_load.restricted = classmethod(_always_restricted)
    # That opt-in (ULTRALYTICS_SAFE_LOAD) would add its own, wider allow-list per checkpoint
    # (any nn.Module under ultralytics.nn, a guarded getattr): SAFE_GLOBALS stays the only one.
    ul_tasks.SAFE_LOAD = False
    if not getattr(ul_trainer.generate_ddp_command, "_trainforge", False):
        ul_trainer.generate_ddp_command = _ddp_command(ul_trainer.generate_ddp_command)


def _always_restricted(cls: Any) -> bool:
    return True


def _no_dataset_cache(path: Any) -> dict[str, Any]:
    """Stands in for Ultralytics' ``load_dataset_cache_file``: never unpickle a ``*.cache``.

    Raises:
        FileNotFoundError: always; Ultralytics treats it as "no cache yet" and scans the labels.
    """
    raise FileNotFoundError(f"{path}: trainforge never reads Ultralytics dataset caches "
                            "(pickles); scanning the label files instead")


def _skip_dataset_cache(prefix: str, path: Any, x: dict[str, Any], version: str) -> None:
    """Stands in for Ultralytics' ``save_dataset_cache_file``: the shared dataset cache (or the
    user's dataset directory) is never written."""
    x["version"] = version  # the original adds it in place, and its callers pop it afterwards


def _ddp_command(generate: Callable[[Any], tuple[list[str], str]]
                 ) -> Callable[[Any], tuple[list[str], str]]:
    """Wrap Ultralytics' ``generate_ddp_command`` so multi-GPU ranks start and then harden.

    A rank first unpickles the job's own DDP state file (trainer class, model, callbacks:
    written by this process, and needing a full unpickle), so the launcher starts without the
    forced weights-only load; unpickling :class:`_Callbacks` then calls :func:`harden_loading`
    in the rank before it loads any weights or labels.
    """
    def generate_hardened(trainer: Any) -> tuple[list[str], str]:
        callbacks = [c for cs in getattr(trainer, "callbacks", {}).values() for c in cs]
        if not any(isinstance(getattr(c, "__self__", None), _Callbacks) for c in callbacks):
            raise RuntimeError("refusing to start Ultralytics' DDP ranks: without trainforge's "
                               "callbacks in their state they would load weights unhardened")
        cmd, file = generate(trainer)
        return ["env", "-u", _FORCE_WEIGHTS_ONLY, *cmd], file

    generate_hardened._trainforge = True  # type: ignore[attr-defined]
    return generate_hardened


def _prove_weights_only(torch: Any) -> None:
    """Fail unless torch refuses a global outside the allow-list despite ``weights_only=False``.

    Raises:
        RuntimeError: torch loaded it (this torch ignores TORCH_FORCE_WEIGHTS_ONLY_LOAD).
    """
    buffer = io.BytesIO()
    torch.save({"probe": EpochResult(1, 1, {})}, buffer)  # harmless, and on no allow-list
    buffer.seek(0)
    try:
        torch.load(buffer, weights_only=False)
    except pickle.UnpicklingError:
        return
    raise RuntimeError(f"torch {torch.__version__} ignored {_FORCE_WEIGHTS_ONLY}=1: weights "
                       "would load with a full unpickle; refusing to run")


def check_weights(path: Path, *, source: str | None = None) -> None:
    """Pre-flight for base weights: a safe load that must yield an Ultralytics detection model.

    Loads ``path`` with torch's weights-only unpickler and :data:`SAFE_GLOBALS` (after
    :func:`harden_loading`), then requires a checkpoint dict whose ``ema`` or ``model`` is an
    Ultralytics ``DetectionModel`` and whose model YAML names only ``torch.nn``/Ultralytics
    layers and a literal ``activation``.

    Args:
        path: the local ``.pt`` file.
        source: what the user named (``s3://…``, ``registry://…``) for the message; default
            ``path``.

    Raises:
        UnsafeWeights: naming the refused globals, or what the file holds instead of a model.
        WeightsError: there is no file at ``path``.
    """
    _load_checked(path, source or str(path))


def _load_checked(path: Path, name: str) -> dict[str, Any]:
    """:func:`check_weights`, returning the checkpoint it loaded (one load, not two).

    Raises:
        UnsafeWeights, WeightsError: as :func:`check_weights`.
    """
    harden_loading()
    import torch
    from ultralytics.nn.tasks import DetectionModel

    if not path.is_file():
        raise WeightsError(f"weights {name}: no file at {path}")
    refused = _refused_globals(path)
    if refused:
        raise UnsafeWeights(_references(name, refused))
    try:
        ckpt: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The legacy (non-zip) format cannot be scanned beforehand: name the global torch hit.
        found = sorted({g if "." in g else f"builtins.{g}"
                        for g in re.findall(r"GLOBAL ([\w.]+)", str(exc))})
        raise UnsafeWeights(_references(name, found) if found else
                            f"weights {name} cannot be loaded safely: {_unpickler_detail(exc)}; "
                            f"{_LOADS_ONLY}") from None
    except Exception as exc:  # not a torch file at all: RuntimeError, EOFError, ValueError…
        raise UnsafeWeights(f"weights {name} are not a torch checkpoint ({type(exc).__name__}: "
                            f"{_first_line(exc)}); {_LOADS_ONLY}") from None
    models = [ckpt.get(key) for key in ("ema", "model")] if isinstance(ckpt, dict) else []
    model = next((m for m in models if isinstance(m, DetectionModel)), None)
    if model is None or not isinstance(ckpt, dict):
        held = f"keys {sorted(map(str, ckpt))[:10]}" if isinstance(ckpt, dict) \
            else f"a {type(ckpt).__name__}"
        raise UnsafeWeights(f"weights {name} hold no Ultralytics detection model (an 'ema' or "
                            f"'model' DetectionModel, as YOLO training writes) but {held}; "
                            f"{_LOADS_ONLY}")
    problem = _model_yaml_problem(getattr(model, "yaml", None))
    if problem:
        raise UnsafeWeights(f"weights {name}: {problem}; {_LOADS_ONLY}")
    return {str(k): v for k, v in ckpt.items()}


def _refused_globals(path: Path) -> list[str]:
    """Every global of a zip checkpoint outside the allow-list (static scan; runs nothing)."""
    import torch

    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # legacy format, TorchScript, not a zip: the load says what it is
        return []


def _references(name: str, refused: list[str]) -> str:
    shown = ", ".join(refused[:_NAMED]) + (f" (and {len(refused) - _NAMED} more)"
                                           if len(refused) > _NAMED else "")
    verb = "is" if len(refused) == 1 else "are"
    return (f"weights {name} reference {shown}, which {verb} not part of an Ultralytics model; "
            f"{_LOADS_ONLY}")


def _unpickler_detail(exc: BaseException) -> str:
    """What torch's weights-only unpickler objected to, without torch's advice around it (which
    suggests ``weights_only=False``: exactly what must not happen)."""
    text = str(exc)
    _, found, detail = text.partition("WeightsUnpickler error:")
    detail = detail.split("Check the documentation of torch.load")[0] if found else text
    return " ".join(detail.split())[:300] or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _model_yaml_problem(cfg: Any) -> str | None:
    """Why the model YAML a checkpoint carries is not a plain layer list, or None.

    Ultralytics rebuilds a fine-tuned model from this dict; its restricted parser (forced by
    :func:`harden_loading`) refuses the same things at run time, later and less clearly.
    """
    if not isinstance(cfg, dict):
        return None
    act = cfg.get("activation")
    if act is not None and not (isinstance(act, str) and _is_nn_layer_call(act)):
        return f"its model YAML's activation {str(act)[:200]!r} is not a torch.nn layer call"
    for entry in [*(cfg.get("backbone") or []), *(cfg.get("head") or [])]:
        layer = entry[2] if isinstance(entry, list | tuple) and len(entry) == 4 else None
        if not (isinstance(layer, str) and _is_layer_name(layer)):
            return f"its model YAML names {str(layer)[:200]!r}, which is not a model layer"
    return None


def _is_nn_layer_call(spec: str) -> bool:
    """``nn.SiLU()``, ``torch.nn.LeakyReLU(0.1)``: a torch.nn layer with literal arguments."""
    try:
        call = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError:
        return False
    if not isinstance(call, ast.Call):
        return False
    parts: list[str] = []
    node = call.func
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or [node.id, *parts[:-1]] not in (["nn"], ["torch", "nn"]):
        return False
    try:
        for value in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(value)
    except ValueError:
        return False
    return all(k.arg is not None for k in call.keywords) and _is_layer_name(f"nn.{parts[-1]}")


def _is_layer_name(name: str) -> bool:
    """A module name as Ultralytics' model parser resolves it, naming an nn.Module class."""
    import torch
    import ultralytics.nn.tasks as ul_tasks

    if name.startswith("nn."):
        found = getattr(torch.nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        found = getattr(importlib.import_module("torchvision.ops"), name[16:], None)
    else:
        found = vars(ul_tasks).get(name)
    return isinstance(found, type) and issubclass(found, torch.nn.Module)


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

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A multi-GPU rank unpickles this from the job's own DDP state file (see _ddp_command):
        # from here on the rank loads weights and labels as hardened as the job itself.
        self.__dict__.update(state)
        harden_loading()

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

    Raises:
        UnsafeWeights: ``model`` is a ``.pt`` file that :func:`check_weights` refuses (this
            process may have fetched it anew since the job's own pre-flight).
    """
    _private_settings()
    harden_loading()
    from ultralytics import YOLO  # type: ignore[attr-defined]

    args = dict(overrides)
    weights = str(args.pop("model"))
    if weights.endswith(".pt") and Path(weights).is_file():
        check_weights(Path(weights))
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
    ckpt = _load_checked(path, str(path))
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
    harden_loading()
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
