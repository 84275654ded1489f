"""``adapter.check_weights``: the pre-flight every job runs on its base weights.

Each malicious file is first shown to be a live attack (loaded the unsafe way in a child
process, it writes its sentinel); the pre-flight must refuse it with ``weights_unsafe``,
naming what it references, without the sentinel ever appearing. Genuine checkpoints that
Ultralytics wrote (stripped, mid-run with optimizer state, resumed) must pass.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from jobs.core import adapter
from tests.fixtures.checkpoints import GenuineCheckpoints
from tests.fixtures.malicious import (
    REPO,
    eval_yaml_checkpoint,
    legacy_weights,
    modelless_weights,
    poisoned_checkpoint,
    reduce_weights,
    unpickles_to_sentinel,
)
from trainforge.errors import UnsafeWeights, WeightsError


@pytest.fixture(autouse=True)
def _private_ultralytics(tmp_path_factory: pytest.TempPathFactory) -> None:
    # check_weights imports Ultralytics: keep its settings file out of the user's home.
    adapter.prepare_environment(tmp_path_factory.getbasetemp() / "ultralytics")


def _refusal(path: Path, sentinel: Path, **kwargs: str) -> UnsafeWeights:
    with pytest.raises(UnsafeWeights) as caught:
        adapter.check_weights(path, **kwargs)
    assert not sentinel.exists(), "the payload ran during the pre-flight"
    assert caught.value.code == "weights_unsafe"
    return caught.value


@pytest.mark.parametrize(("payload", "named"), [
    ("os.system", "posix.system"), ("exec", "builtins.exec"), ("eval", "builtins.eval"),
])
def test_a_reduce_payload_is_refused_naming_the_global(payload: str, named: str,
                                                        tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    weights = reduce_weights(tmp_path / "x.pt", sentinel, payload)
    error = _refusal(weights, sentinel, source="s3://bucket/x.pt")
    assert error.message == (
        f"weights s3://bucket/x.pt reference {named}, which is not part of an Ultralytics model; "
        "trainforge loads only Ultralytics checkpoints (torch weights_only with an allow-list)")
    assert unpickles_to_sentinel(weights, sentinel), "the file is not a live attack"


def test_one_malicious_object_inside_a_genuine_checkpoint_is_refused(
        genuine_checkpoints: GenuineCheckpoints, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    weights = poisoned_checkpoint(genuine_checkpoints.best, tmp_path / "x.pt", sentinel)
    error = _refusal(weights, sentinel)
    assert f"weights {weights} reference builtins.exec, which is not part" in error.message
    assert unpickles_to_sentinel(weights, sentinel)


def test_the_legacy_format_is_loaded_safely_and_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    weights = legacy_weights(tmp_path / "x.pt", sentinel)
    error = _refusal(weights, sentinel)
    assert "reference posix.system, which is not part of an Ultralytics model" in error.message
    assert unpickles_to_sentinel(weights, sentinel)


def test_a_file_without_a_model_is_refused(tmp_path: Path) -> None:
    weights = modelless_weights(tmp_path / "x.pt")
    error = _refusal(weights, tmp_path / "sentinel")
    assert "hold no Ultralytics detection model" in error.message
    assert "['epoch', 'state_dict']" in error.message


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "x.pt"
    weights.write_bytes(b"<html>403 Forbidden</html>")
    error = _refusal(weights, tmp_path / "sentinel")
    assert f"weights {weights} cannot be loaded safely: Unsupported operand" in error.message
    assert "weights_only` set to `False`" not in error.message, "never advise the unsafe load"


def test_a_missing_file_is_unavailable_not_unsafe(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as caught:
        adapter.check_weights(tmp_path / "none.pt", source="s3://bucket/none.pt")
    assert type(caught.value) is WeightsError and caught.value.code == "weights_unavailable"


def test_code_in_the_model_yaml_is_refused(
        genuine_checkpoints: GenuineCheckpoints, tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    weights = eval_yaml_checkpoint(genuine_checkpoints.best, tmp_path / "x.pt", sentinel)
    error = _refusal(weights, sentinel)
    assert "model YAML's activation" in error.message
    assert "is not a torch.nn layer call" in error.message
    # Control: Ultralytics' default parser (what a fine-tune runs) executes it.
    code = ("import sys, torch; from ultralytics.nn.tasks import DetectionModel; "
            "ckpt = torch.load(sys.argv[1], weights_only=False); "
            "DetectionModel(ckpt['model'].yaml, verbose=False)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")}
    subprocess.run([sys.executable, "-c", code, str(weights)], env=env, cwd=REPO,
                   capture_output=True, timeout=300, check=False)
    assert sentinel.is_file(), "the YAML payload is not live"


def _ema_decoy(dest: Path, sentinel: Path) -> Path:
    """A genuine DetectionModel as 'model' and, as 'ema', an allow-listed C2f block carrying
    a model YAML with code: the pre-flight used to check the first DetectionModel among the
    two, while Ultralytics builds from ``ckpt.get("ema") or ckpt["model"]``, the C2f."""
    import torch
    from ultralytics.nn.modules.block import C2f
    from ultralytics.nn.tasks import DetectionModel

    decoy = C2f(8, 8)
    decoy.yaml = {"nc": 3, "activation": f"nn.SiLU() if open({str(sentinel)!r}, 'w') else 0",
                  "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": []}
    genuine = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    torch.save({"ema": decoy, "model": genuine, "epoch": -1}, dest)
    return dest


def test_the_object_ultralytics_loads_must_be_the_task_model(tmp_path: Path) -> None:
    from ultralytics.nn.tasks import load_checkpoint

    sentinel = tmp_path / "sentinel"
    weights = _ema_decoy(tmp_path / "x.pt", sentinel)
    error = _refusal(weights, sentinel, source="s3://bucket/x.pt")
    assert error.message == (
        "weights s3://bucket/x.pt: Ultralytics would build the model from their 'ema' entry, "
        "which is a C2f, not an Ultralytics DetectionModel; trainforge loads only Ultralytics "
        "checkpoints (torch weights_only with an allow-list)")
    # Control: that is indeed what Ultralytics' own loader picks from this file.
    model, _ = load_checkpoint(weights)
    assert type(model).__name__ == "C2f"
    # The shapes Ultralytics writes pass: a mid-run 'ema', a stripped file's 'model' alone.
    import torch

    genuine = model_only = torch.load(weights, weights_only=True)["model"]
    for name, ckpt in {"ema": {"ema": genuine, "model": genuine},
                       "stripped": {"ema": None, "model": model_only}}.items():
        torch.save(ckpt, tmp_path / f"{name}.pt")
        adapter.check_weights(tmp_path / f"{name}.pt")


def test_an_ema_without_a_truth_value_is_refused(tmp_path: Path) -> None:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    weights = tmp_path / "x.pt"
    torch.save({"ema": torch.zeros(3), "model": DetectionModel("yolov8n.yaml", verbose=False)},
               weights)
    error = _refusal(weights, tmp_path / "sentinel")
    assert "their 'ema' entry is a Tensor without a truth value" in error.message


@pytest.mark.parametrize("which", ["best", "mid_run", "resumed"])
def test_genuine_checkpoints_pass(
        which: str, genuine_checkpoints: GenuineCheckpoints) -> None:
    path = getattr(genuine_checkpoints, which)
    adapter.check_weights(path)
    info = adapter.read_checkpoint(path)
    assert info.resumable is (which == "mid_run"), "optimizer state is read back safely too"


@pytest.mark.parametrize("activation", ["nn.SiLU()", "torch.nn.LeakyReLU(0.1)",
                                        "nn.ReLU(inplace=True)"])
def test_literal_torch_activations_are_allowed(activation: str) -> None:
    assert adapter.safety._model_yaml_problem({"activation": activation, "backbone": [],
                                        "head": [[-1, 1, "Conv", [16, 3, 2]]]}) is None


@pytest.mark.parametrize("cfg", [
    {"activation": "nn.SiLU() if __import__('os') else None"},
    {"activation": "nn.Sequential(*[])"},
    {"activation": "os.system('x')"},
    {"activation": "nn.functional(1)"},
    {"backbone": [[-1, 1, "torch_safe_load", ["x.pt"]]]},
    {"backbone": [[-1, 1, "check_requirements", ["pkg"]]]},
])
def test_model_yaml_code_or_non_layers_are_named(cfg: dict[str, object]) -> None:
    assert adapter.safety._model_yaml_problem(cfg) is not None


def test_unsafe_weights_is_a_weights_error_that_survives_ray() -> None:
    error = UnsafeWeights("weights x reference posix.system")
    assert isinstance(error, WeightsError)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.code, copy.message) == (UnsafeWeights, "weights_unsafe",
                                                      error.message)


def test_a_refusal_is_not_retried_by_the_dispatcher() -> None:
    from services.store.dispatch import NON_RETRYABLE_ERRORS

    assert UnsafeWeights.code in NON_RETRYABLE_ERRORS


def _callers() -> list[Callable[[Path], object]]:
    return [adapter.read_checkpoint, adapter.finalize_checkpoint]


@pytest.mark.parametrize("call", _callers(), ids=lambda f: f.__name__)
def test_adapter_loads_refuse_what_the_pre_flight_refuses(call: Callable[[Path], object],
                                                          tmp_path: Path) -> None:
    sentinel = tmp_path / "sentinel"
    weights = reduce_weights(tmp_path / "x.pt", sentinel)
    try:
        call(weights)
    except Exception as exc:  # read_checkpoint raises; strip_optimizer only warns
        assert "posix.system" in str(exc) or "GLOBAL" in str(exc), exc
    assert not sentinel.exists()
