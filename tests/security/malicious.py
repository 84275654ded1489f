"""Malicious files for the weights and label-cache tests, and genuine checkpoints to compare.

Every malicious file here writes a *sentinel* file when it is unpickled, so a test proves an
attack failed by the sentinel never existing (and proves the file is a real attack by
:func:`unpickles_to_sentinel`, which loads it the unsafe way in a child process and sees the
sentinel appear). The helpers are importable (``from tests.security.malicious import …``) so
other tests (registry://, storage policies) can reuse them.

Run as a script (``python tests/security/malicious.py genuine DEST``) it trains the genuine
checkpoints itself, so that the test process never runs Ultralytics training unhardened.
"""

from __future__ import annotations

import builtins
import json
import os
import shlex
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
#: What every payload writes into its sentinel file.
PWNED = "pwned"


def _write_code(sentinel: Path) -> str:
    return f"open({str(sentinel)!r}, 'w').write({PWNED!r})"


class RunsShell:
    """Unpickles as ``os.system("echo pwned > SENTINEL")`` (pickled as ``posix.system``)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return os.system, (f"echo {PWNED} > {shlex.quote(str(self.sentinel))}",)


class RunsExec:
    """Unpickles as ``exec("open(SENTINEL, 'w').write('pwned')")`` (``builtins.exec``)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return builtins.exec, (_write_code(self.sentinel),)


class RunsEval:
    """Unpickles as ``eval("open(SENTINEL, 'w').write('pwned')")`` (``builtins.eval``)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return builtins.eval, (_write_code(self.sentinel),)


#: The payloads by the global each makes the unpickler call.
PAYLOADS: dict[str, type[RunsShell | RunsExec | RunsEval]] = {
    "os.system": RunsShell, "exec": RunsExec, "eval": RunsEval,
}


def reduce_weights(dest: Path, sentinel: Path, payload: str = "os.system") -> Path:
    """A ``.pt`` (torch zip format) whose checkpoint dict's ``model`` is a ``__reduce__``
    payload (see :data:`PAYLOADS`)."""
    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": PAYLOADS[payload](sentinel), "epoch": 0}, dest)
    return dest


def legacy_weights(dest: Path, sentinel: Path) -> Path:
    """The same ``os.system`` payload in torch's legacy (pre-1.6, non-zip) format, which
    ``torch.serialization.get_unsafe_globals_in_checkpoint`` cannot scan."""
    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": RunsShell(sentinel)}, dest, _use_new_zipfile_serialization=False)
    return dest


def _genuine_dict(genuine: Path) -> dict[str, Any]:
    import torch

    # Our own checkpoint from a real training: a full load is what producing the fake needs.
    ckpt: dict[str, Any] = torch.load(genuine, map_location="cpu", weights_only=False)
    return ckpt


def _model_of(ckpt: dict[str, Any]) -> Any:
    return ckpt.get("ema") or ckpt["model"]


def poisoned_checkpoint(genuine: Path, dest: Path, sentinel: Path) -> Path:
    """A genuine Ultralytics checkpoint with one malicious object nested deep inside its model
    (an attribute of the first layer): every other global is one a real checkpoint has."""
    import torch

    ckpt = _genuine_dict(genuine)
    first_layer = _model_of(ckpt).model[0]
    first_layer.__dict__["calibration"] = RunsExec(sentinel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dest)
    return dest


def eval_yaml_checkpoint(genuine: Path, dest: Path, sentinel: Path) -> Path:
    """A genuine checkpoint that passes any allow-list (only a string changed) but whose model
    YAML's ``activation`` is Python code: Ultralytics' default model parser passes it to
    ``eval()`` when a training rebuilds the model from the checkpoint."""
    import torch

    ckpt = _genuine_dict(genuine)
    _model_of(ckpt).yaml["activation"] = f"exec({_write_code(sentinel)!r}) or nn.SiLU()"
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dest)
    return dest


def modelless_weights(dest: Path) -> Path:
    """A harmless ``.pt`` (tensors and an OrderedDict only) that holds no model at all."""
    import torch

    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 3, "state_dict": OrderedDict(weight=torch.zeros(4, 4))}, dest)
    return dest


def label_cache(dest: Path, sentinel: Path) -> Path:
    """An Ultralytics-style ``labels.cache`` (``np.save`` of a dict) holding an ``exec``
    payload: ``np.load(allow_pickle=True)``, as Ultralytics reads caches, runs it."""
    import numpy as np

    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("wb") as fh:  # a file object: np.save would append .npy to a path
        np.save(fh, np.array({"version": "1.0.3", "hash": "", "payload": RunsExec(sentinel)},
                             dtype=object), allow_pickle=True)
    return dest


#: Child-process loaders that read a file the way Ultralytics does without trainforge.
_UNSAFE_LOADERS = {
    "torch": "import sys, torch; torch.load(sys.argv[1], map_location='cpu', weights_only=False)",
    "numpy": "import sys, numpy; numpy.load(sys.argv[1], allow_pickle=True).item()",
}


def unpickles_to_sentinel(path: Path, sentinel: Path, loader: str = "torch") -> bool:
    """Load ``path`` the unsafe way in a fresh interpreter; True when the sentinel appeared.

    The control for every attack test: a file that did not write its sentinel here would
    make "the sentinel never exists" prove nothing.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")}
    subprocess.run([sys.executable, "-c", _UNSAFE_LOADERS[loader], str(path)], env=env,
                   capture_output=True, timeout=300, check=False)
    found = sentinel.is_file() and sentinel.read_text().strip() == PWNED
    sentinel.unlink(missing_ok=True)
    return found


@dataclass(frozen=True)
class GenuineCheckpoints:
    """Checkpoints Ultralytics itself wrote, from yolov8n.yaml on the tiny 3-class set."""

    best: Path  # best.pt of a finished 1-epoch run (optimizer stripped)
    mid_run: Path  # last.pt after epoch 1 of 2, with optimizer state (what a job resumes)
    resumed: Path  # last.pt of that run resumed to its end
    dataset: Path  # the dataset they were trained on


def train_genuine(dest: Path) -> GenuineCheckpoints:
    """Train the genuine checkpoints in a child process (plain Ultralytics, CPU, 64 px).

    Raises:
        AssertionError: the training failed (its output is in the message).
    """
    dest.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1",
           "YOLO_CONFIG_DIR": str(dest / "ultralytics")}
    env = {k: v for k, v in env.items() if not k.startswith("TORCH_FORCE_")}
    proc = subprocess.run([sys.executable, __file__, "genuine", str(dest)], env=env, cwd=dest,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    paths = json.loads((dest / "genuine.json").read_text())
    return GenuineCheckpoints(**{k: Path(v) for k, v in paths.items()})


@pytest.fixture(scope="session")
def genuine_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> GenuineCheckpoints:
    """:func:`train_genuine` once per test session (about 20 s on two CPU cores)."""
    return train_genuine(tmp_path_factory.mktemp("genuine"))


def _train_genuine_here(dest: Path) -> None:
    """The child process of :func:`train_genuine`."""
    import shutil

    from ultralytics import YOLO  # type: ignore[attr-defined]

    from trainforge.datasets import synth, write_local_data_yaml

    dataset = synth(dest / "shapes", train=16, val=8, test=8, imgsz=64, classes=3, seed=0)
    data_yaml = write_local_data_yaml(dataset, dest / "data.yaml")
    common = {"data": str(data_yaml), "imgsz": 64, "batch": 8, "workers": 0, "device": "cpu",
              "amp": False, "mosaic": 0.0, "warmup_epochs": 0, "plots": False,
              "verbose": False, "exist_ok": True, "project": str(dest / "runs")}
    YOLO("yolov8n.yaml").train(epochs=1, name="best", **common)

    class Interrupt(Exception):
        pass

    def interrupt_after_first_epoch(trainer: Any) -> None:
        if trainer.epoch == 0:
            shutil.copyfile(trainer.last, dest / "mid_run.pt")
            raise Interrupt()

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_model_save", interrupt_after_first_epoch)
    try:
        model.train(epochs=2, name="resumed", **common)
    except Interrupt:
        pass
    YOLO(str(dest / "runs" / "resumed" / "weights" / "last.pt")).train(
        resume=True, data=str(data_yaml), device="cpu", workers=0)
    (dest / "genuine.json").write_text(json.dumps({
        "best": str(dest / "runs" / "best" / "weights" / "best.pt"),
        "mid_run": str(dest / "mid_run.pt"),
        "resumed": str(dest / "runs" / "resumed" / "weights" / "last.pt"),
        "dataset": str(dataset),
    }))


if __name__ == "__main__":
    if sys.argv[1:2] != ["genuine"] or len(sys.argv) != 3:
        raise SystemExit("usage: python tests/security/malicious.py genuine DEST")
    _train_genuine_here(Path(sys.argv[2]))
