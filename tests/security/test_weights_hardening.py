"""``adapter.harden_loading``: the layers below the pre-flight, each shown to hold on its own.

A file that slipped past ``check_weights`` (fetched anew by a worker, say) must still not run:
torch's loader refuses it whatever Ultralytics passes, a model YAML is parsed without
``eval``, and Ultralytics' multi-GPU ranks, which start as processes of their own, harden
themselves before they load anything.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jobs.core import adapter
from tests.fixtures.checkpoints import GenuineCheckpoints
from tests.fixtures.malicious import (
    REPO,
    eval_yaml_checkpoint,
    reduce_weights,
    unpickles_to_sentinel,
)
from trainforge.errors import UnsafeWeights


@pytest.fixture(autouse=True)
def _hardened(tmp_path_factory: pytest.TempPathFactory) -> None:
    adapter.prepare_environment(tmp_path_factory.getbasetemp() / "ultralytics")
    adapter.harden_loading()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")}
    return {**env, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1",
            "YOLO_CONFIG_DIR": str(tmp_path / "ultralytics"), **extra}


def test_weights_only_false_no_longer_escapes(tmp_path: Path) -> None:
    import torch
    import ultralytics.nn.tasks

    tasks: Any = ultralytics.nn.tasks  # untyped
    sentinel = tmp_path / "sentinel"
    weights = reduce_weights(tmp_path / "x.pt", sentinel, "exec")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(weights, weights_only=False)  # what Ultralytics' torch_load passes
    with pytest.raises(TypeError, match="not a loadable checkpoint"):
        tasks.torch_safe_load(str(weights))  # Ultralytics' own loader, as YOLO(path) calls it
    assert not sentinel.exists()
    assert unpickles_to_sentinel(weights, sentinel)


def test_the_opposite_torch_variable_cannot_undo_it(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    adapter.harden_loading()
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    sentinel = tmp_path / "sentinel"
    with pytest.raises(pickle.UnpicklingError):
        torch.load(reduce_weights(tmp_path / "x.pt", sentinel), weights_only=False)
    assert not sentinel.exists()


def test_a_process_that_cannot_force_weights_only_refuses_to_run() -> None:
    class IgnoresTheVariable:
        __version__ = "0.0"

        @staticmethod
        def save(obj: object, buffer: object) -> None:
            pass

        @staticmethod
        def load(buffer: object, weights_only: bool) -> None:
            return None

    with pytest.raises(RuntimeError, match="ignored TORCH_FORCE_WEIGHTS_ONLY_LOAD"):
        adapter.safety._prove_weights_only(IgnoresTheVariable)


def test_model_yaml_code_is_not_evaluated_when_a_model_is_rebuilt(
        genuine_checkpoints: GenuineCheckpoints, tmp_path: Path) -> None:
    """What a fine-tune does with a checkpoint's YAML (trainer.get_model), refused without
    running it; a plain layer YAML still builds."""
    import torch
    import ultralytics.nn.tasks

    detection_model: Any = ultralytics.nn.tasks.DetectionModel  # untyped
    sentinel = tmp_path / "sentinel"
    weights = eval_yaml_checkpoint(genuine_checkpoints.best, tmp_path / "x.pt", sentinel)
    ckpt = torch.load(weights, weights_only=True)  # passes the allow-list: only strings differ
    with pytest.raises(TypeError, match="unsupported activation"):
        detection_model(ckpt["model"].yaml, nc=3, verbose=False)
    assert not sentinel.exists()
    plain = torch.load(genuine_checkpoints.best, weights_only=True)["model"].yaml
    assert isinstance(detection_model(plain, nc=3, verbose=False), detection_model)


def test_a_worker_that_fetched_a_bad_file_refuses_it_before_training(tmp_path: Path) -> None:
    """adapter.train, as a Ray Train worker or a Tune trial calls it, in a fresh process."""
    sentinel = tmp_path / "sentinel"
    weights = reduce_weights(tmp_path / "x.pt", sentinel)
    code = ("import sys; from pathlib import Path; from jobs.core import adapter\n"
            "adapter.prepare_environment(Path(sys.argv[2]))\n"
            "try:\n"
            "    adapter.train({'model': sys.argv[1], 'data': 'none.yaml'}, None)\n"
            "except Exception as exc:\n"
            "    print('RAISED', type(exc).__name__, getattr(exc, 'code', ''))\n")
    done = subprocess.run([sys.executable, "-c", code, str(weights), str(tmp_path / "ul")],
                          env=_env(tmp_path), cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert "RAISED UnsafeWeights weights_unsafe" in done.stdout, done.stdout + done.stderr
    assert not sentinel.exists()


def test_unsafe_weights_from_a_worker_keeps_its_code() -> None:
    from jobs.train.ray_runner import _worker_error

    failure = RuntimeError("worker died")
    failure.__cause__ = UnsafeWeights("weights x reference posix.system")
    found = _worker_error(SimpleNamespace(worker_failures={0: failure}))  # type: ignore[arg-type]
    assert isinstance(found, UnsafeWeights) and found.code == "weights_unsafe"


def test_ultralytics_cannot_launch_ranks_of_its_own() -> None:
    """Its torchrun ranks would unpickle a state file in full and train outside Ray Train's
    process group: data-parallel ranks are Ray Train workers only."""
    import ultralytics.engine.trainer

    from jobs.core import adapter

    adapter.harden_loading()
    ul_trainer: Any = ultralytics.engine.trainer  # untyped
    with pytest.raises(RuntimeError, match="own multi-GPU launch is disabled"):
        ul_trainer.generate_ddp_command(SimpleNamespace(world_size=2))
