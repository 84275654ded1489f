"""Fixtures for the sweep job: the train job's recording API and runner, sweep specs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.train.conftest import (  # noqa: F401  (fixtures, registered by importing them)
    JobRunner,
    RecordingAPI,
    make_dataset,
    recording_api,
    tiny_dataset,
    tiny_spec,
)


def sweep_spec(dataset_uri: str, *, sweep: dict[str, Any] | None = None,
               **overrides: Any) -> dict[str, Any]:
    """A sweep over lr0 and momentum of the train job's tiny spec (CPU, 64 px)."""
    spec = tiny_spec(dataset_uri, **overrides)
    spec["kind"] = "sweep"
    spec["sweep"] = {
        "trials": 3, "searcher": "random", "scheduler": "asha", "grace_period": 1,
        "reduction_factor": 2, "gpus_per_trial": 0, "cpus_per_trial": 1,
        "space": {"lr0": {"loguniform": [0.002, 0.05]}, "momentum": {"uniform": [0.8, 0.95]}},
        **(sweep or {}),
    }
    return spec


@pytest.fixture()
def sweep_runner(tmp_path: Path, recording_api: RecordingAPI) -> JobRunner:  # noqa: F811
    """``python -m jobs.sweep`` with artifacts and models in local directories."""
    return JobRunner(home=tmp_path / "home", artifacts_uri=f"file://{tmp_path}/artifacts",
                     models_uri=f"file://{tmp_path}/models", api=recording_api,
                     module="jobs.sweep")


def experiment_trials(state_dir: Path) -> dict[str, tuple[str, int]]:
    """``{trial id: (status, last reported epoch)}`` from a Tune experiment's saved state.

    Reads the file Tune restores from, so it shows exactly what a restore will see.
    """
    files = sorted(state_dir.glob("experiment_state-*.json"))
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
    except ValueError:  # caught mid-write (Tune replaces it atomically elsewhere): retry later
        return {}
    trials = {}
    for trial_json, meta_json in state["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(meta_json)
        trials[trial["trial_id"]] = (trial["status"], int(meta["last_result"].get("epoch") or 0))
    return trials
