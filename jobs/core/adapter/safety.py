"""How weights and dataset files are read: torch weights_only with an Ultralytics allow-list,
restricted model YAMLs, no pickled label caches (see the package docstring)."""

from __future__ import annotations

import ast
import importlib
import io
import logging
import os
import pickle
import re
import threading
from pathlib import Path
from typing import Any

from jobs.core.adapter.epochs import EpochResult
from trainforge.errors import UnsafeWeights, WeightsError

log = logging.getLogger(__name__)

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
    true) and ``ultralytics.nn.tasks.SAFE_LOAD`` (false); and it disables
    ``ultralytics.engine.trainer.generate_ddp_command`` (see :func:`_no_ddp_spawn`).

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
                           "update jobs/core/adapter/ SAFE_GLOBALS") from None


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
    # Ranks come from Ray Train (distributed.py); a torchrun of Ultralytics' own would start
    # outside it.
    ul_trainer.generate_ddp_command = _no_ddp_spawn


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


def _no_ddp_spawn(trainer: Any) -> tuple[list[str], str]:
    """Stands in for Ultralytics' ``generate_ddp_command``: its ranks would unpickle a state
    file with a full unpickle and train outside Ray Train's process group.

    Raises:
        RuntimeError: always; data-parallel training runs as Ray Train workers
            (``resources.workers``, jobs/core/adapter/distributed.py).
    """
    raise RuntimeError("Ultralytics' own multi-GPU launch is disabled in trainforge: ask for "
                       "resources.workers (one GPU each) and Ray Train runs the ranks")


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
    :func:`harden_loading`), then requires a checkpoint dict in which the object Ultralytics
    will build the model from (``ema`` when set, else ``model``) is exactly the task's model
    class (:func:`task_model_class`) and its model YAML names only ``torch.nn``/Ultralytics
    layers and a literal ``activation``.

    Args:
        path: the local ``.pt`` file.
        source: what the user named (``s3://…``, ``registry://…``) for the message; default
            ``path``.

    Raises:
        UnsafeWeights: naming the refused globals, or what the file holds instead of a model.
        WeightsError: there is no file at ``path``.
    """
    load_checked(path, source or str(path))


def load_checked(path: Path, name: str) -> dict[str, Any]:
    """:func:`check_weights`, returning the checkpoint it loaded (one load, not two).

    Raises:
        UnsafeWeights, WeightsError: as :func:`check_weights`.
    """
    harden_loading()
    import torch

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
    if not isinstance(ckpt, dict):
        raise UnsafeWeights(f"weights {name} hold no Ultralytics detection model (an 'ema' or "
                            f"'model' DetectionModel, as YOLO training writes) but a "
                            f"{type(ckpt).__name__}; {_LOADS_ONLY}")
    key, model = _what_ultralytics_loads(ckpt, name)
    if model is None:
        raise UnsafeWeights(f"weights {name} hold no Ultralytics detection model (an 'ema' or "
                            f"'model' DetectionModel, as YOLO training writes) but keys "
                            f"{sorted(map(str, ckpt))[:10]}; {_LOADS_ONLY}")
    wanted = task_model_class()
    if type(model) is not wanted:
        raise UnsafeWeights(
            f"weights {name}: Ultralytics would build the model from their {key!r} entry, "
            f"which is a {type(model).__name__}, not an Ultralytics {wanted.__name__}; "
            f"{_LOADS_ONLY}")
    problem = _model_yaml_problem(getattr(model, "yaml", None))
    if problem:
        raise UnsafeWeights(f"weights {name}: {problem}; {_LOADS_ONLY}")
    return {str(k): v for k, v in ckpt.items()}


def task_model_class() -> type[Any]:
    """The model class a checkpoint must carry: Ultralytics' ``DetectionModel`` (trainforge
    trains detectors; a model of another task, or a layer standing in for a model, is
    refused)."""
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel


def _what_ultralytics_loads(ckpt: dict[Any, Any], name: str) -> tuple[str, Any]:
    """The entry Ultralytics builds the model from, and its value: ``ckpt.get("ema") or
    ckpt["model"]`` (``ultralytics/nn/tasks.py``: ``load_checkpoint``, ``BaseModel.load``),
    so exactly the object checked is the object used; (``"model"``, None) when neither holds
    anything.

    Raises:
        UnsafeWeights: the 'ema' entry has no truth value (a tensor of several elements, on
            which Ultralytics' own ``or`` fails).
    """
    ema = ckpt.get("ema")
    try:
        use_ema = bool(ema)
    except Exception as exc:  # torch refuses bool() of a multi-element tensor
        raise UnsafeWeights(f"weights {name}: their 'ema' entry is a {type(ema).__name__} "
                            f"without a truth value ({_first_line(exc)}); {_LOADS_ONLY}"
                            ) from None
    return ("ema", ema) if use_ema else ("model", ckpt.get("model"))


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


