"""Ultralytics' ``labels.cache`` is never unpickled, nor written into shared dataset folders.

Ultralytics keeps a ``<split>/labels.cache`` (a pickle read with ``np.load(allow_pickle=True)``)
beside the labels: in the node's shared dataset cache, or in the user's own folder when a
dataset is used in place (the export job's file:// datasets). A planted one ran code in every
later job on that dataset. Here a planted cache that writes a sentinel when unpickled sits
where each job reads its labels; real jobs must run to the end without the sentinel ever
appearing, scan the labels instead, and leave no cache behind.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from jobs.core import adapter
from tests.fixtures.checkpoints import GenuineCheckpoints
from tests.fixtures.malicious import label_cache, unpickles_to_sentinel
from tests.fixtures.training import (
    TEAM,
    JobRunner,
    RayHead,
    RecordingAPI,
    head_env,
    make_dataset,
    tiny_spec,
)
from trainforge import layout

SPLITS = ("train", "val", "test")


def _plant(root: Path, sentinel: Path) -> dict[Path, bytes]:
    """A malicious ``labels.cache`` where Ultralytics looks for each split's cache."""
    planted = {}
    for split in SPLITS:
        path = label_cache(root / split / "labels.cache", sentinel)
        planted[path] = path.read_bytes()
    return planted


def _caches(root: Path) -> set[Path]:
    return set(root.rglob("*.cache"))


def _runner(tmp_path: Path, api: RecordingAPI, module: str = "jobs.train",
            head: RayHead | None = None) -> JobRunner:
    """A job runner reading local paths only; on ``head`` when given (training jobs)."""
    return JobRunner(home=tmp_path / "home", artifacts_uri=f"file://{tmp_path}/artifacts",
                     models_uri=f"file://{tmp_path}/models", api=api, module=module,
                     readable=("file:///",), env=head_env(head) if head else {})


def _synced_path(output: str) -> Path:
    found = re.search(r"step dataset-sync: .* -> (\S+) \(", output)
    assert found, output[-3000:]
    return Path(found.group(1))


def test_a_planted_cache_is_a_live_attack(tmp_path: Path) -> None:
    """The control for every test here: Ultralytics' own loader runs the payload."""
    sentinel = tmp_path / "sentinel"
    cache = label_cache(tmp_path / "labels.cache", sentinel)
    assert unpickles_to_sentinel(cache, sentinel, loader="numpy")


def test_ultralytics_scans_the_labels_instead_of_loading_a_cache(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    adapter.prepare_environment(tmp_path_factory.getbasetemp() / "ultralytics")
    adapter.harden_loading()
    from ultralytics.data.dataset import YOLODataset

    sentinel = tmp_path / "sentinel"
    root = make_dataset(tmp_path / "ds", train=8, val=4, test=4)
    planted = _plant(root, sentinel)
    data = {"names": {0: "square", 1: "circle", 2: "triangle"}, "nc": 3, "channels": 3}
    dataset = YOLODataset(img_path=str(root / "train" / "images"), data=data, imgsz=64,
                          augment=False, task="detect")
    assert len(dataset.labels) == 8 and all(lb["cls"].size for lb in dataset.labels)
    assert not sentinel.exists()
    assert {p: p.read_bytes() for p in _caches(root)} == planted, "no cache was (re)written"


@pytest.mark.slow
def test_a_cache_planted_in_the_synced_copy_is_never_loaded(
        tmp_path: Path, recording_api: RecordingAPI, ray_head: RayHead) -> None:
    """The node's dataset cache, where one job's files sat for every later job on the same
    dataset version: only the hardened Ultralytics loader stands between them."""
    from trainforge.datasets import sync
    from trainforge.settings import CommonSettings

    sentinel = tmp_path / "sentinel"
    source = make_dataset(tmp_path / "ds", train=16, val=8, test=8)
    runner = _runner(tmp_path, recording_api, head=ray_head)
    cache_dir = CommonSettings(home=runner.home).team_dataset_cache(TEAM)
    synced = sync(f"file://{source}", cache_dir).path  # what an earlier job left there
    planted = _plant(synced, sentinel)

    run = runner.run("job-cache", tiny_spec(f"file://{source}", train={"epochs": 1}),
                     timeout=600)
    assert run.returncode == 0, run.output[-5000:]
    assert recording_api.states(run.job_id) == ["RUNNING", "SUCCEEDED"]
    assert _synced_path(run.output) == synced, "the job trained on the poisoned copy"
    assert not sentinel.exists(), "the planted labels.cache ran inside the job"
    assert {p: p.read_bytes() for p in _caches(synced)} == planted, "no cache was written"
    assert unpickles_to_sentinel(next(iter(planted)), sentinel, loader="numpy")


@pytest.mark.slow
def test_a_cache_planted_in_the_dataset_folder_is_never_loaded(
        tmp_path: Path, recording_api: RecordingAPI, ray_head: RayHead) -> None:
    """In the user's own folder: the dataset sync leaves it behind, and training succeeds."""
    sentinel = tmp_path / "sentinel"
    source = make_dataset(tmp_path / "ds", train=16, val=8, test=8)
    _plant(source, sentinel)
    run = _runner(tmp_path, recording_api, head=ray_head).run(
        "job-cache-src", tiny_spec(f"file://{source}", train={"epochs": 1}), timeout=600)
    assert run.returncode == 0, run.output[-5000:]
    assert not sentinel.exists(), "the planted labels.cache ran inside the job"
    assert _caches(_synced_path(run.output)) == set(), "no cache was synced or written"


@pytest.mark.slow
def test_an_export_reading_the_dataset_in_place_never_loads_its_cache(
        tmp_path: Path, recording_api: RecordingAPI,
        genuine_checkpoints: GenuineCheckpoints) -> None:
    """The export job evaluates best.pt on a file:// dataset where it lies, so Ultralytics
    reads (and used to write) caches in the user's own folder."""
    sentinel = tmp_path / "sentinel"
    source = tmp_path / "ds"
    shutil.copytree(genuine_checkpoints.dataset, source)  # the set the checkpoint knows
    planted = _plant(source, sentinel)
    spec = {"kind": "export", "name": "shapes", "dataset": {"uri": f"file://{source}"},
            "model": {"base": f"file://{genuine_checkpoints.best}"},
            "export": {"formats": ["onnx"], "imgsz": 64}}
    run = _runner(tmp_path, recording_api, "jobs.export").run("export-cache", spec,
                                                               timeout=600)
    log = (tmp_path / "artifacts" / layout.attempt_log_key(run.job_id, 1)).read_text()
    assert "best.pt on cpu: mAP50-95" in log, run.output[-5000:]  # it evaluated on the split
    assert recording_api.final_state(run.job_id)["error_code"] in (None, "export_gate_failed")
    assert not sentinel.exists(), "the planted labels.cache ran inside the job"
    assert {p: p.read_bytes() for p in _caches(source)} == planted, "no cache was written"
