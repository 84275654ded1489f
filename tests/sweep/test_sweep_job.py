"""``python -m jobs.sweep`` end to end, as the dispatcher runs it: real Ray Tune, Ultralytics,
a loopback S3 server, the job-events route recording what the job posts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fixtures.training import JobRunner, RecordingAPI, experiment_trials, sweep_spec
from trainforge import layout
from trainforge.storage import join_key, open_location

pytestmark = pytest.mark.slow

MATCHED = "trainer arguments match its config"


def _trial_starts(api: RecordingAPI, job_id: str) -> list[dict[str, Any]]:
    return [e for e in api.of(job_id, "message") if e["message"].endswith(MATCHED)]


def _progress(api: RecordingAPI, job_id: str) -> dict[tuple[str, int], list[int]]:
    """``{(trial, attempt): [epochs in the order they were posted]}``."""
    seen: dict[tuple[str, int], list[int]] = {}
    for e in api.of(job_id, "progress"):
        seen.setdefault((e["trial"], e["attempt"]), []).append(e["epoch"])
    return seen


def test_eight_trials_on_s3_download_the_dataset_once_and_publish_the_best(
        tmp_path: Path, s3_bucket: str, tiny_dataset: Path,
        recording_api: RecordingAPI) -> None:
    """8 trials of 1 epoch, 2 at once: data synced once per node, every trial checked against
    its own config, the best one evaluated, reported with the trial table, and published."""
    dataset_uri = f"s3://{s3_bucket}/datasets/shapes/"
    store, prefix = open_location(dataset_uri)
    files = sorted(p for p in tiny_dataset.rglob("*") if p.is_file())
    for path in files:
        store.upload(path, join_key(prefix, path.relative_to(tiny_dataset).as_posix()))
    dataset_bytes = sum(p.stat().st_size for p in files)
    runner = JobRunner(home=tmp_path / "home", artifacts_uri=f"s3://{s3_bucket}/artifacts",
                       models_uri=f"s3://{s3_bucket}/models", api=recording_api,
                       module="jobs.sweep", readable=(f"s3://{s3_bucket}/datasets/",))
    spec = sweep_spec(dataset_uri, train={"epochs": 1},
                      sweep={"trials": 8, "max_concurrent_trials": 2})
    run = runner.run("sweep-s3", spec, timeout=900)
    assert run.returncode == 0, run.output[-6000:]
    assert recording_api.final_state("sweep-s3")["state"] == "SUCCEEDED"

    # The plan is a notice with what the watching user's bar counts against.
    (plan,) = recording_api.message("sweep-s3", "sweep: 8 trials over")
    assert plan["data"] == {"notice": True, "sweep_trials": 8,
                            "sweep_metric": "metrics/mAP50-95(B)"}, plan

    # Every trial trained, each reporting its epoch under its own trial id.
    progress = _progress(recording_api, "sweep-s3")
    assert len(progress) == 8 and all(epochs == [1] for epochs in progress.values()), progress
    starts = {e["data"]["trial"]: e["data"] for e in _trial_starts(recording_api, "sweep-s3")}
    assert set(starts) == {trial for trial, _ in progress}

    # Data once: the entrypoint's sync fetched the dataset; no trial (nor the evaluation)
    # fetched it again.
    synced = [e["data"] for e in recording_api.message("sweep-s3", "dataset synced")]
    evaluated = [e["data"] for e in recording_api.message("sweep-s3", "evaluating the best")]
    reports = [*synced, *starts.values(), *evaluated]
    assert len(reports) == 1 + 8 + 1
    downloaded = sum(int(r["bytes_downloaded"]) for r in reports)
    print(f"data once: {downloaded} bytes downloaded for a {dataset_bytes}-byte dataset "
          f"({downloaded / dataset_bytes:.3f}x) over 8 trials")
    assert 0 < downloaded <= 1.05 * dataset_bytes

    # report.json: the trial table holds the configs the trials verified their trainers used.
    artifacts, base = open_location(runner.artifacts_uri + "/")
    train_prefix = join_key(base, layout.train_output_prefix("sweep-s3"))
    report = json.loads(artifacts.get(join_key(train_prefix, "report.json")))
    table = {row["trial_id"]: row for row in report["sweep"]["trials"]}
    assert set(table) == set(starts)
    for trial, row in table.items():
        assert row["config"] == {k: starts[trial][k] for k in ("lr0", "momentum")}
        assert (row["status"], row["epochs_run"], row["stopped_early"]) == ("finished", 1, False)
        assert row["map50_95_per_epoch"][0][0] == 1
    assert len({json.dumps(row["config"], sort_keys=True) for row in table.values()}) == 8
    best = report["sweep"]["best_trial"]
    assert report["training"]["hyperparameters"]["lr0"] == table[best]["config"]["lr0"]
    assert report["evaluation"]["split"] == "test"
    png = artifacts.get(join_key(train_prefix, report["sweep"]["plot"]))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert artifacts.exists(join_key(base, layout.ray_storage_prefix("sweep-s3"),
                                     "sweep/tuner.pkl")), "the experiment lives in the bucket"

    models, key = open_location(runner.manifest_uri("shapes", "sweep-s3"))
    manifest = json.loads(models.get(key))
    assert manifest["metrics"] == report["evaluation"]["metrics"]


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(
        sweep_runner: JobRunner, tiny_dataset: Path, recording_api: RecordingAPI) -> None:
    """Kill -9 the driver once a trial finished and another is mid-way; the next attempt
    restores the experiment: finished trials keep their results, the interrupted one continues
    after its last checkpointed epoch, and the rest run."""
    job = "sweep-resume"
    epochs = 3
    spec = sweep_spec(str(tiny_dataset), train={"epochs": epochs},
                      sweep={"trials": 3, "scheduler": "fifo", "max_concurrent_trials": 2})
    artifacts = Path(sweep_runner.artifacts_uri.removeprefix("file://"))
    state_dir = artifacts / layout.ray_storage_prefix(job) / "sweep"
    proc = sweep_runner.start(job, spec)
    family: list[psutil.Process] = []
    deadline = time.monotonic() + 600
    try:
        while True:
            trials = experiment_trials(state_dir)
            done = [t for t, (status, _) in trials.items() if status == "TERMINATED"]
            midway = [t for t, (status, epoch) in trials.items()
                      if status not in ("TERMINATED", "ERROR") and 1 <= epoch < epochs]
            if done and midway:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.communicate()[0] if proc.poll() is not None else ""
                pytest.fail(f"no moment with a finished and a half-done trial: {trials}\n"
                            f"{output[-5000:]}")
            family = psutil.Process(proc.pid).children(recursive=True)
            time.sleep(0.25)
        family = psutil.Process(proc.pid).children(recursive=True)
    finally:
        proc.kill()  # SIGKILL: no handler, no cleanup, like a node that vanished
        proc.communicate()
        for child in family:  # its local Ray and trials die with it, as its actors would
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    before = experiment_trials(state_dir)
    dirs_before = sorted(p.name for p in state_dir.glob("run_trial_*"))
    first = _progress(recording_api, job)
    finished = {t for t, (status, _) in before.items() if status == "TERMINATED"}
    assert finished and len(dirs_before) == 3, before
    assert recording_api.states(job) == ["RUNNING"], "a killed driver posts nothing more"

    run = sweep_runner.run(job, spec, attempt=2, timeout=900)
    assert run.returncode == 0, run.output[-6000:]
    assert recording_api.final_state(job)["state"] == "SUCCEEDED"
    assert recording_api.message(job, "resuming the sweep")
    second = _progress(recording_api, job)
    for trial, (_, checkpointed) in before.items():
        again = second.get((trial, 2), [])
        if trial in finished:
            assert again == [], f"finished trial {trial} trained again: {again}"
        else:  # continues after its last checkpointed epoch (0: never reported one)
            assert again == list(range(checkpointed + 1, epochs + 1)), (trial, checkpointed,
                                                                         again, first)
    assert sorted(p.name for p in state_dir.glob("run_trial_*")) == dirs_before
    after = experiment_trials(state_dir)
    assert set(after) == set(before) and all(s == "TERMINATED" for s, _ in after.values())
    report = json.loads((artifacts / layout.train_output_prefix(job) / "report.json"
                         ).read_text())
    rows = report["sweep"]["trials"]
    assert sorted(r["trial_id"] for r in rows) == sorted(before)
    for row in rows:
        assert [e for e, _ in row["map50_95_per_epoch"]] == list(range(1, epochs + 1)), row
    assert report["sweep"]["epochs_total"] == 3 * epochs
    trained = sum(len(v) for v in first.values()) + sum(
        len(v) for (_, attempt), v in second.items() if attempt == 2)
    print(f"resume: {len(finished)} trial(s) finished before the kill; epochs trained in all "
          f"{trained} for {3 * epochs} in the table")


def test_data_parallel_trials_train_on_two_workers_each(
        sweep_runner: JobRunner, tiny_dataset: Path, recording_api: RecordingAPI) -> None:
    """Two trials with ``workers_per_trial: 2`` (gloo, one CPU each), one after the other on
    this machine: each trial is two processes, rank 0 alone reports its epochs to the API and
    Tune, and the best one is published like any sweep's."""
    job = "sweep-ddp"
    epochs = 2
    spec = sweep_spec(str(tiny_dataset), train={"epochs": epochs},
                      sweep={"trials": 2, "scheduler": "fifo", "workers_per_trial": 2})
    run = sweep_runner.run(job, spec, timeout=900)
    assert run.returncode == 0, run.output[-6000:]
    assert recording_api.final_state(job)["state"] == "SUCCEEDED"

    starts = _trial_starts(recording_api, job)
    assert len(starts) == 2, "one start message per trial, from its rank 0"
    for start in starts:
        pids = start["data"]["pids"].split(",")
        assert start["data"]["workers"] == 2 and len(set(pids)) == 2, start["data"]
        assert str(start["data"]["pid"]) == pids[0], "the trial's own process is rank 0"
    progress = _progress(recording_api, job)
    assert sorted(progress.values()) == [[1, 2], [1, 2]], "each epoch reported once, by rank 0"
    assert "1 at once, 2 data-parallel workers of 1 CPU each" in run.output, "the plan"
    models = Path(sweep_runner.models_uri.removeprefix("file://"))
    assert list(models.glob(f"*/shapes/{job}/manifest.json")), "the best trial is published"
