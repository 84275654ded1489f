"""export_and_publish end to end on a trained detector: gates, report, manifest, metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.export import convert
from jobs.export.convert import tensorrt_unavailable_reason
from jobs.export.pipeline import export_and_publish
from tests.fixtures.checkpoints import Trained
from tests.fixtures.export import sample, scrape
from trainforge.constants import ENV_PUSHGATEWAY_URL
from trainforge.registry import read_manifest, verify
from trainforge.spec import JobSpec, parse_spec
from trainforge.storage import S3Store, open_location

pytestmark = pytest.mark.slow


def _spec(trained: Trained, **export: Any) -> JobSpec:
    return parse_spec({
        "kind": "export", "name": "shapes", "dataset": {"uri": str(trained.dataset)},
        "model": {"base": f"file://{trained.weights}"},
        "export": {"formats": ["onnx", "engine"], "int8": True, **export},
    })


def _artifact(manifest_uri: str, name: str) -> bytes:
    store, key = open_location(manifest_uri.replace("manifest.json", name))
    return store.get(key)


def test_onnx_is_gated_and_published_and_engines_are_skipped_without_a_gpu(
    trained: Trained, s3_bucket: str, pushgateway: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_PUSHGATEWAY_URL, pushgateway)
    models_uri = f"s3://{s3_bucket}/models"
    (tmp_path / "results.csv").write_text("epoch,metrics/mAP50-95(B)\n10,0.46\n")
    (tmp_path / "train-report.json").write_text(json.dumps({"train": {"epochs": 10}}))
    outcome = export_and_publish(
        _spec(trained), job_id="job-1", weights=trained.weights, data_yaml=trained.data_yaml,
        workdir=tmp_path / "work", models_uri=models_uri,
        extra_files={"results.csv": tmp_path / "results.csv",
                     "report.json": tmp_path / "train-report.json"},
        metadata={"metrics": {"train/mAP50-95": 0.46}},
    )
    onnx = outcome.formats["onnx"]
    assert onnx.status == "passed", onnx.reason
    assert onnx.map_delta is not None and abs(onnx.map_delta) <= 0.005
    assert onnx.reference_map50_95 is not None and onnx.reference_map50_95 > 0.2  # it detects
    assert onnx.latency and onnx.reference_latency
    assert onnx.latency["runs"] == onnx.reference_latency["runs"] == 50
    assert onnx.latency["batch"] == 1 and onnx.latency["device"] == "cpu"
    assert onnx.latency["threads"] == onnx.reference_latency["threads"]
    no_trt = tensorrt_unavailable_reason()
    if no_trt is not None:
        for key in ("engine-fp16", "engine-int8"):
            engine = outcome.formats[key]
            assert (engine.status, engine.artifact) == ("skipped", None)
            assert no_trt in engine.reason
    assert outcome.ok and outcome.published is not None and outcome.published.created

    manifest = read_manifest(outcome.published.manifest_uri)
    names = {a["name"] for a in manifest["artifacts"]}
    assert names == {"best.pt", "model.onnx", "report.json", "results.csv"} | {
        a for a in (outcome.formats[k].artifact for k in ("engine-fp16", "engine-int8")) if a}
    assert verify(outcome.published.manifest_uri) == []
    assert _artifact(outcome.published.manifest_uri, "best.pt") == trained.weights.read_bytes()
    assert manifest["class_names"] == {"0": "square"}
    assert manifest["input_shape"] == [1, 3, 64, 64]
    assert manifest["source"]["job_id"] == "job-1"
    assert len(manifest["dataset_fingerprint"]) == 64
    assert manifest["metrics"]["train/mAP50-95"] == 0.46
    assert manifest["metrics"]["pytorch"]["cpu"]["map50_95"] == onnx.reference_map50_95
    assert manifest["gates"]["onnx"]["status"] == "passed"
    # S3 itself vouches for the ONNX file's sha256 (single-part upload, full-object checksum).
    store, key = open_location(outcome.published.manifest_uri.replace("manifest.json",
                                                                      "model.onnx"))
    assert isinstance(store, S3Store) and store.checksum_sha256(key) == onnx.sha256

    report = json.loads(_artifact(outcome.published.manifest_uri, "report.json"))
    assert report["train"] == {"epochs": 10}  # the training report, merged
    section = report["export"]
    assert section["evaluation"]["split"] == "test"
    assert section["evaluation"]["rect"] is False and section["evaluation"]["batch"] == 1
    assert section["formats"]["onnx"]["status"] == "passed"
    assert set(section["formats"]) == {"onnx", "engine-fp16", "engine-int8"}
    assert section["formats"]["onnx"]["map_delta"] == onnx.map_delta

    got = scrape(pushgateway)
    assert sample(got, "trainforge_export_gate_passed", format="onnx", model="shapes") == 1
    assert sample(got, "trainforge_export_map_delta", format="onnx") == onnx.map_delta
    assert sample(got, "trainforge_export_artifact_bytes", format="onnx") == onnx.bytes
    assert sample(got, "trainforge_export_last_success_timestamp_seconds") is not None

    # A rerun of the same job publishes nothing new and changes nothing.
    again = export_and_publish(
        _spec(trained), job_id="job-1", weights=trained.weights, data_yaml=trained.data_yaml,
        workdir=tmp_path / "work2", models_uri=models_uri,
    )
    assert again.already_published and again.published is not None
    assert not again.published.created and again.published.manifest == manifest
    assert again.formats["onnx"].map_delta == onnx.map_delta


def _degraded(weights: Path, dest: Path) -> Path:
    """The same model with its box branch biased towards far bins: boxes grow, mAP drops."""
    import torch

    ckpt = torch.load(weights, weights_only=False, map_location="cpu")
    head = ckpt["model"].model[-1]
    with torch.no_grad():
        for branch in head.cv2:
            bins = branch[-1].bias.view(4, -1)
            bins[:, bins.shape[1] // 2:] += 3.0
    ckpt["ema"] = None
    torch.save(ckpt, dest)
    return dest


def test_a_format_that_fails_its_gate_is_reported_but_not_published(
    trained: Trained, tmp_path: Path, pushgateway: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fault injection: the ONNX converter loses accuracy (a real ONNX file of worse weights).
    real_export = convert.export_onnx
    degraded = _degraded(trained.weights, tmp_path / "degraded.pt")
    monkeypatch.setattr(convert, "export_onnx",
                        lambda weights, dest, **kw: real_export(degraded, dest, **kw))
    monkeypatch.setenv(ENV_PUSHGATEWAY_URL, pushgateway)
    outcome = export_and_publish(
        _spec(trained, formats=["onnx"]), job_id="job-2", weights=trained.weights,
        data_yaml=trained.data_yaml, workdir=tmp_path / "work",
        models_uri=f"file://{tmp_path}/models",
    )
    onnx = outcome.formats["onnx"]
    assert onnx.status == "failed" and outcome.failed == ["onnx"] and not outcome.ok
    assert onnx.map_delta is not None and onnx.map_delta < -0.005
    assert "exceeds the gate 0.0050" in onnx.reason
    assert outcome.published is not None
    manifest = read_manifest(outcome.published.manifest_uri)
    assert {a["name"] for a in manifest["artifacts"]} == {"best.pt", "report.json"}
    assert manifest["gates"]["onnx"]["status"] == "failed"
    report = json.loads(_artifact(outcome.published.manifest_uri, "report.json"))
    failed = report["export"]["formats"]["onnx"]
    assert failed["map50_95"] < failed["reference_map50_95"] and failed["latency"]["runs"] == 50
    got = scrape(pushgateway)
    assert sample(got, "trainforge_export_gate_passed", format="onnx") == 0
    assert sample(got, "trainforge_export_last_success_timestamp_seconds") is None
