"""A trial whose trainer did not get its sampled values fails loudly, before its first epoch.

The wrong value is injected where the trial hands its arguments to the adapter (inside the
trial's own Ray process); Ultralytics itself is real and writes the args.yaml that the trial
then checks.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from jobs.core import adapter, dataset_step, ray_cluster
from jobs.sweep.trial import TrialContext, run_trial
from jobs.sweep.tuning import trial_error
from tests.fixtures.training import REPO, sweep_spec
from trainforge.errors import HyperparameterMismatch
from trainforge.spec import Resources, parse_spec

WRONG_LR0 = 0.0234


def _trial_given_a_wrong_lr0(config: dict[str, Any], ctx: TrialContext) -> None:
    """run_trial, with lr0 replaced on its way from the trial's config to Ultralytics."""
    original = adapter.train_overrides

    def wrong(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**original(*args, **kwargs), "lr0": WRONG_LR0}

    with mock.patch.object(adapter, "train_overrides", wrong):
        run_trial(config, ctx)


@pytest.fixture()
def environ_restored() -> Iterator[None]:
    """Put os.environ back as it was: Ray started in this process sets variables in it
    (RAY_AUTH_MODE=token among them) that would leak into every later test's subprocesses;
    a job driver that inherits RAY_AUTH_MODE=token fails against a cluster without auth."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.slow
@pytest.mark.usefixtures("environ_restored")
def test_a_trial_trained_with_another_lr0_fails_with_a_mismatch(
        tmp_path: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import cloudpickle, tune

    # Ray workers import the trainable's module: ship this one by value, and the repo by path.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    spec = parse_spec(sweep_spec(str(tiny_dataset)))
    synced = dataset_step.sync(str(tiny_dataset), tmp_path / "cache")
    ctx = TrialContext(spec=spec, job_id="mismatch", attempt=1,
                       models_uri=f"file://{tmp_path}/models", work_root=str(tmp_path / "work"),
                       cache_dir=str(tmp_path / "cache"),
                       dataset_fingerprint=synced.fingerprint)
    ray_cluster.connect(Resources(gpus=0, cpus=1))
    try:
        grid = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trial_given_a_wrong_lr0, ctx=ctx),
                                {"cpu": 1}),
            param_space={"lr0": 0.01, "momentum": 0.9},
            tune_config=tune.TuneConfig(num_samples=1),
            run_config=tune.RunConfig(name="mismatch", storage_path=str(tmp_path / "ray"),
                                      verbose=0),
        ).fit()
    finally:
        ray_cluster.shutdown()
    (result,) = grid
    assert result.error is not None, "the trial trained with lr0=0.0234 and nobody noticed"
    cause = trial_error(result.error)
    assert type(cause) is HyperparameterMismatch, repr(result.error)
    assert cause.code == "hyperparameter_mismatch"
    assert f"lr0: config 0.01, trainer {WRONG_LR0}" in cause.message
    assert "momentum" not in cause.message, "only the value that differs is named"
    assert pickle.loads(pickle.dumps(cause)).message == cause.message
    frame = result.metrics_dataframe
    assert frame is None or "epoch" not in frame.columns, "refused before its first epoch"
