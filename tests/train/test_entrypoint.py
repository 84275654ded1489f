"""``python -m jobs.train --spec URI`` run as the dispatcher runs it, checked from outside:
exit status, events posted to the API, objects in the artifacts and models stores."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import boto3
import pytest

from tests.fixtures.training import (
    JobRunner,
    RayHead,
    RecordingAPI,
    head_env,
    make_dataset,
    tiny_spec,
)
from trainforge import layout
from trainforge.registry import read_manifest, verify
from trainforge.storage import S3Store


def _no_manifest(store_root: Path, name: str = "shapes") -> bool:
    return not list(store_root.glob(f"*/{name}/*/manifest.json"))


@pytest.mark.slow
def test_train_job_end_to_end_with_s3_buckets(
    tmp_path: Path, s3_server: str, recording_api: RecordingAPI, tiny_dataset: Path,
    ray_head: RayHead,
) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for bucket in ("tf-datasets", "tf-artifacts", "tf-models"):
        s3.create_bucket(Bucket=bucket)
    datasets = S3Store("tf-datasets", endpoint_url=s3_server)
    for path in sorted(p for p in tiny_dataset.rglob("*") if p.is_file()):
        if path.suffix != ".cache":  # Ultralytics' label caches from other tests
            datasets.upload(path, f"shapes/{path.relative_to(tiny_dataset)}")
    runner = JobRunner(home=tmp_path / "home", artifacts_uri="s3://tf-artifacts/prod",
                       models_uri="s3://tf-models", api=recording_api, env=head_env(ray_head))
    artifacts = S3Store("tf-artifacts", endpoint_url=s3_server)
    job = "job-e2e"
    log_key = "prod/" + layout.attempt_log_key(job, 1)

    proc = runner.start(job, tiny_spec("s3://tf-datasets/shapes/", train={"plots": True}))
    log_seen_while_running = False
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        log_seen_while_running |= artifacts.exists(log_key)
        time.sleep(1)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-5000:]

    # Events: RUNNING first, one ProgressEvent per epoch with Ultralytics' names, SUCCEEDED.
    assert recording_api.states(job) == ["RUNNING", "SUCCEEDED"]
    assert recording_api.epochs(job) == [1, 2]
    progress = recording_api.of(job, "progress")[-1]
    for name in ("train/box_loss", "train/cls_loss", "metrics/precision(B)",
                 "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "lr/pg0",
                 "epoch_seconds", "images_per_second"):
        assert name in progress["metrics"], name
    assert recording_api.tokens[job] == {f"Bearer token-{job}"}

    # The log: shipped while the job ran, complete after, one line per step.
    assert log_seen_while_running, "the log object appears while the job runs"
    log_text = artifacts.get(log_key).decode()
    for name in ("spec", "dataset-sync", "dataset-validate", "data-yaml", "weights",
                 "ray-connect", "train", "evaluate", "upload-outputs", "publish"):
        assert f"step {name}: " in log_text, name
    assert "SUCCEEDED" in log_text

    # Checkpoints and run outputs in the artifacts bucket.
    assert artifacts.exists(f"prod/{layout.checkpoint_key(job)}")
    train_prefix = "prod/" + layout.train_output_prefix(job)
    outputs = {info.key.removeprefix(train_prefix) for info in artifacts.list(train_prefix)}
    assert {"best.pt", "last.pt", "results.csv", "report.json", "args.yaml"} <= outputs
    assert {"results.png", "test_confusion_matrix.png"} <= outputs, "plots are uploaded"
    ray_prefix = "prod/" + layout.ray_storage_prefix(job)
    assert list(artifacts.list(ray_prefix)), "Ray Train's run storage is in the bucket"

    # report.json: test-split evaluation with per-class AP and the confusion matrix.
    report = json.loads(artifacts.get(train_prefix + "report.json"))
    evaluation = report["evaluation"]
    assert evaluation["split"] == "test"
    assert set(evaluation["metrics"]) == {"precision", "recall", "mAP50", "mAP50-95"}
    assert [c["name"] for c in evaluation["per_class"]] == ["square", "circle", "triangle"]
    for row in evaluation["per_class"]:
        assert {"AP50", "AP50-95", "instances", "images"} <= set(row)
    matrix = evaluation["confusion_matrix"]
    assert matrix["labels"] == ["square", "circle", "triangle", "background"]
    assert len(matrix["matrix"]) == 4 and all(len(r) == 4 for r in matrix["matrix"])
    test_instances = sum(len((tiny_dataset / "test" / "labels" / f.name).read_text().splitlines())
                         for f in (tiny_dataset / "test" / "labels").iterdir())
    # Every test box is a column entry: matched, confused or missed.
    true_columns = list(zip(*matrix["matrix"], strict=True))[:3]
    assert sum(sum(column) for column in true_columns) == test_instances
    assert report["training"]["epochs_completed"] == 2
    rows = list(csv.DictReader(io.StringIO(artifacts.get(train_prefix + "results.csv").decode())))
    assert [int(float(r["epoch"])) for r in rows] == [1, 2]

    # The published model: manifest last, every artifact intact, metadata for its readers.
    manifest_uri = runner.manifest_uri("shapes", job)
    manifest = read_manifest(manifest_uri)
    assert verify(manifest_uri) == []
    assert {a["name"] for a in manifest["artifacts"]} == {"best.pt", "last.pt", "report.json",
                                                          "results.csv"}
    assert manifest["source_job_id"] == job
    assert manifest["evaluation"]["split"] == "test"
    assert manifest["metrics"] == evaluation["metrics"]
    assert manifest["class_names"] == ["square", "circle", "triangle"]
    assert manifest["input_shape"] == [1, 3, 64, 64]
    assert len(manifest["dataset"]["fingerprint"]) >= 16
    assert manifest["dataset"]["uri"] == "s3://tf-datasets/shapes/"
    [synced] = recording_api.message(job, "dataset synced")
    assert synced["data"]["bytes_downloaded"] > 0


def test_second_job_on_the_same_dataset_downloads_nothing(
    local_runner: JobRunner, tmp_path: Path
) -> None:
    dataset = make_dataset(tmp_path / "ds", train=4, val=2, test=2)
    # Stock weights cannot be fetched offline, so each job stops right after the dataset steps.
    spec = tiny_spec(f"file://{dataset}", model={"base": "yolov8n.pt"})
    for job in ("job-a", "job-b"):
        run = local_runner.run(job, spec, timeout=300)
        assert run.returncode != 0
    [first] = local_runner.api.message("job-a", "dataset synced")
    [second] = local_runner.api.message("job-b", "dataset synced")
    assert first["data"]["bytes_downloaded"] > 0
    assert second["data"]["bytes_downloaded"] == 0
    assert second["data"]["files_downloaded"] == 0
    assert second["data"]["fingerprint"] == first["data"]["fingerprint"]


def test_stock_weights_offline_fail_clearly(local_runner: JobRunner, tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "ds", train=4, val=2, test=2)
    run = local_runner.run("job-w", tiny_spec(f"file://{dataset}",
                                              model={"base": "yolov8s.pt"}), timeout=300)
    assert run.returncode == 1
    final = local_runner.api.final_state("job-w")
    assert final["state"] == "FAILED"
    assert final["error_code"] == "weights_unavailable"
    assert "yolov8s.pt" in final["reason"] and "mirror" in final["reason"]
    assert "ray-connect" not in run.output, "fails before any cluster time is spent"
    assert _no_manifest(tmp_path / "models")


def test_invalid_dataset_fails_with_its_report_uploaded(
    local_runner: JobRunner, tmp_path: Path
) -> None:
    dataset = make_dataset(tmp_path / "ds", train=4, val=2, test=2)
    label = sorted((dataset / "train" / "labels").iterdir())[0]
    label.write_text("7 0.5 0.5 0.2 0.2\n")  # class 7 of 3
    run = local_runner.run("job-bad", tiny_spec(f"file://{dataset}"), timeout=300)

    assert run.returncode == 1
    final = local_runner.api.final_state("job-bad")
    assert (final["state"], final["error_code"]) == ("FAILED", "dataset_invalid")
    assert label.name in final["reason"]
    report_path = tmp_path / "artifacts" / layout.dataset_report_key("job-bad")
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert any(label.name in json.dumps(p) for p in report["problems"])
    assert "ray-connect" not in run.output, "refused before any cluster time is spent"
    assert _no_manifest(tmp_path / "models")


@pytest.mark.parametrize(("what", "code"), [("dataset", "dataset_not_found"),
                                            ("model", "model_not_found")])
def test_a_missing_dataset_or_model_fails_once_with_a_permanent_code(
    local_runner: JobRunner, tmp_path: Path, what: str, code: str
) -> None:
    """The real entrypoint's code for each is one the dispatcher never retries."""
    from services.store.dispatch import NON_RETRYABLE_ERRORS

    dataset = make_dataset(tmp_path / "ds", train=4, val=2, test=2)
    spec = tiny_spec(f"file://{tmp_path}/nowhere/" if what == "dataset" else f"file://{dataset}",
                     model={"base": "registry://shapes@champion"} if what == "model" else
                     {"base": "yolov8n.yaml"})
    run = local_runner.run(f"job-no-{what}", spec, timeout=300)
    assert run.returncode == 1
    final = local_runner.api.final_state(f"job-no-{what}")
    assert (final["state"], final["error_code"]) == ("FAILED", code), final
    assert code in NON_RETRYABLE_ERRORS
    assert "ray-connect" not in run.output, "refused before any cluster time is spent"


def test_invalid_spec_is_refused_with_the_field_named(local_runner: JobRunner) -> None:
    run = local_runner.run("job-spec", {"kind": "train", "name": "x", "dataset": {"uri": "/d"},
                                        "train": {"epochs": 0}}, timeout=120)
    assert run.returncode == 1
    final = local_runner.api.final_state("job-spec")
    assert final["error_code"] == "spec_invalid"
    assert "train.epochs" in final["reason"]


def test_a_spec_without_resources_trains_on_what_this_machine_has(
    local_runner: JobRunner, tiny_dataset: Path
) -> None:
    """A first job's spec has no resources section (1 GPU by default); on a machine with fewer
    GPUs the local Ray job trains on what there is, down to the CPU, and says so."""
    import torch

    have = torch.cuda.device_count()
    spec = tiny_spec(f"file://{tiny_dataset}")
    del spec["resources"]  # the defaults: 1 GPU, 8 CPUs
    if have:  # on a GPU machine, ask for one more than it has
        spec["resources"] = {"gpus": have + 1}
    run = local_runner.run("job-nogpu", spec)
    assert run.returncode == 0, run.output[-5000:]
    assert local_runner.api.final_state("job-nogpu")["state"] == "SUCCEEDED"
    (adapted,) = local_runner.api.message("job-nogpu", "the spec asks for")
    assert adapted["data"] == {"requested_gpus": max(have + 1, 1), "gpus": have,
                               "workers": max(have, 1), "notice": True}
    assert "training on" in adapted["message"]


def test_runs_are_bounded_across_ray_restarts_and_attempts(
    local_runner: JobRunner, tiny_dataset: Path, tmp_path: Path
) -> None:
    """A job trains at most retries + 1 times in all: with its runs already used up (by Ray
    Train restarts and earlier attempts), the next attempt refuses to train, for good."""
    job = "job-spent"
    for run in (1, 2):  # retries: 1 → two runs, both spent
        marker = tmp_path / "artifacts" / layout.run_marker_key(job, run)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_bytes(b"")
    result = local_runner.run(job, tiny_spec(f"file://{tiny_dataset}", retries=1), attempt=2)
    assert result.returncode == 1, result.output[-3000:]
    final = local_runner.api.final_state(job)
    assert final["error_code"] == "retries_exhausted", final
    assert "2 training run(s)" in final["reason"]
    assert local_runner.api.epochs(job) == []
