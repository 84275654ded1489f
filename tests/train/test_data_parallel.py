"""Data-parallel training: one job as two Ray Train workers (gloo on the CPU), Ultralytics'
own trainer in each rank, against the same job as one worker.

Both runs train the same model from the same YAML on the same 128-image dataset with the same
global batch (16) and epochs; the two-worker run splits each batch 8 + 8 across its ranks
and all-reduces the gradients, as Ultralytics' own multi-GPU training does. Only rank 0
writes: exactly one best.pt, last.pt, results.csv and report.json, one progress event per
epoch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.training import (
    TEAM,
    JobRunner,
    RayHead,
    RecordingAPI,
    make_dataset,
    tiny_spec,
)
from tests.train.support import KillAfterEpoch, explain
from trainforge import layout

pytestmark = pytest.mark.slow

#: Equal global batch and epochs for both runs. nbs = batch: one optimizer step per batch
#: (Ultralytics' default nbs 64 would accumulate 4 batches), enough steps to learn in 10 epochs.
TRAIN: dict[str, Any] = {"epochs": 10, "imgsz": 96, "batch": 16, "nbs": 16, "seed": 0,
                         "deterministic": True}
#: mAP50-95 on the test split may differ this much (absolute) between 1 and 2 workers: the
#: runs see the same images per step, but BatchNorm statistics are per rank (8 images, not
#: 16) and the reduction order of the gradients differs, so they are not bit-identical.
MAP_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def ddp_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128 train / 24 val / 24 test images at 96 px, three shape classes."""
    return make_dataset(tmp_path_factory.mktemp("ddp") / "shapes", train=128, val=24, test=24,
                        imgsz=96)


def _spec(dataset: Path, workers: int, *, epochs: int = TRAIN["epochs"],
          imgsz: int = TRAIN["imgsz"], **overrides: Any) -> dict[str, Any]:
    spec = tiny_spec(f"file://{dataset}", train={**TRAIN, "epochs": epochs, "imgsz": imgsz},
                     **overrides)
    spec["resources"] = {"workers": workers, "gpus_per_worker": 0, "cpus": 1}
    return spec


def _outputs(tmp_path: Path, job: str) -> list[str]:
    root = tmp_path / "artifacts" / layout.train_output_prefix(job)
    return sorted(p.name for p in root.iterdir())


def _report(tmp_path: Path, job: str) -> dict[str, Any]:
    path = tmp_path / "artifacts" / layout.train_output_prefix(job) / "report.json"
    return dict(json.loads(path.read_text()))


def _results_epochs(tmp_path: Path, job: str) -> list[int]:
    path = tmp_path / "artifacts" / layout.train_output_prefix(job) / "results.csv"
    with path.open() as fh:
        return [int(float(row["epoch"])) for row in csv.DictReader(fh)]


def test_two_workers_train_like_one(
    local_runner: JobRunner, recording_api: RecordingAPI, ddp_dataset: Path, tmp_path: Path,
) -> None:
    runs = {n: local_runner.run(f"job-w{n}", _spec(ddp_dataset, n), timeout=900) for n in (1, 2)}
    for n, run in runs.items():
        assert run.returncode == 0, f"{n} worker(s):\n{run.output[-6000:]}"
        assert recording_api.final_state(f"job-w{n}")["state"] == "SUCCEEDED"

    started = recording_api.message("job-w2", "training worker started")
    assert sorted(m["data"]["rank"] for m in started) == [0, 1]
    assert {m["data"]["workers"] for m in started} == {2}
    assert len({m["data"]["pid"] for m in started}) == 2, "two processes, one per rank"
    # Rank 0 alone reports: one progress event per epoch, one run claimed.
    assert recording_api.epochs("job-w2") == list(range(1, TRAIN["epochs"] + 1))
    assert len(recording_api.message("job-w2", "training run")) == 1
    # Exactly one set of outputs, the same files as the one-worker job's.
    assert _outputs(tmp_path, "job-w2") == _outputs(tmp_path, "job-w1")
    assert _results_epochs(tmp_path, "job-w2") == list(range(1, TRAIN["epochs"] + 1))
    assert list((tmp_path / "models" / TEAM / "shapes").glob("job-w2/manifest.json"))

    one, two = (_report(tmp_path, f"job-w{n}") for n in (1, 2))
    assert (one["training"]["workers"], one["training"]["batch_per_worker"]) == (1, 16)
    assert (two["training"]["workers"], two["training"]["batch_per_worker"]) == (2, 8)
    assert one["training"]["hyperparameters"]["batch"] == two["training"]["hyperparameters"][
        "batch"] == TRAIN["batch"]
    map1, map2 = (r["evaluation"]["metrics"]["mAP50-95"] for r in (one, two))
    print(f"test-split mAP50-95: 1 worker {map1:.4f}, 2 workers {map2:.4f}")
    assert map1 > 0.2 and map2 > 0.2, "both runs learned"
    assert abs(map1 - map2) <= MAP_TOLERANCE, (map1, map2)


@pytest.mark.parametrize("rank", [1, 0])
def test_a_killed_rank_restarts_the_group_from_the_last_checkpoint(
    cluster_runner: JobRunner, recording_api: RecordingAPI, tiny_dataset: Path, tmp_path: Path,
    ray_head: RayHead, rank: int,
) -> None:
    """One rank (1: one that only trains; 0: the one that writes) is killed after epoch 1:
    Ray Train restarts both workers and they resume at epoch 2 from last.pt (on the tiny set:
    nothing here needs the model to learn)."""
    job = f"job-ddp-kill-{rank}"

    def rank_pid() -> int:
        started = recording_api.message(job, "training worker started")
        return int(next(m["data"]["pid"] for m in started if m["data"]["rank"] == rank))

    killer = KillAfterEpoch(recording_api, job, epoch=1, pid=rank_pid)
    recording_api.on_event = killer
    run = cluster_runner.run(job, _spec(tiny_dataset, 2, epochs=3, imgsz=64, retries=1),
                             timeout=900)

    assert killer.killed, f"no kill after epoch 1; {explain(run.output, ray_head)}"
    assert run.returncode == 0, run.output[-6000:]
    assert recording_api.final_state(job)["state"] == "SUCCEEDED"
    runs = recording_api.message(job, "training run")
    assert [(m["data"]["run"], m["data"]["max_runs"]) for m in runs] == [(1, 2), (2, 2)]
    [resumed] = recording_api.message(job, "resuming from epoch")
    assert resumed["data"]["resumed_epoch"] == 2 and resumed["data"]["workers"] == 2
    started = recording_api.message(job, "training worker started")
    assert sorted(m["data"]["rank"] for m in started) == [0, 0, 1, 1], "the group restarted"
    # At most the epoch in flight was lost, none repeated.
    assert recording_api.epochs(job) == [1, 2, 3]
    assert _results_epochs(tmp_path, job) == [1, 2, 3]
    assert _report(tmp_path, job)["training"]["resumed_at_epoch"] == 2
