"""Spec refusal, format planning, gate decisions and engine names (no model needed)."""

from __future__ import annotations

import pytest

from jobs.export.convert import GpuInfo, engine_file_name, gpu_slug
from jobs.export.pipeline import planned_formats
from jobs.export.results import FormatResult, threshold_for
from trainforge.errors import SpecError
from trainforge.spec import ExportGates, ExportParams, parse_spec

BASE = {"kind": "export", "name": "ppe", "dataset": {"uri": "s3://datasets/ppe/"},
        "model": {"base": "registry://ppe@latest"}}


def test_an_unsupported_format_is_refused_at_submit_time_with_what_is_supported() -> None:
    # parse_spec is what POST /v1/jobs runs; its message is the problem+json detail.
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "export": {"formats": ["onnx", "tflite", "coreml"]}})
    assert str(info.value) == (
        "export.formats: Value error, unsupported export format(s) tflite, coreml; "
        "trainforge exports: engine, onnx"
    )


def test_repeated_formats_and_an_export_job_without_export_section_are_refused() -> None:
    with pytest.raises(SpecError, match="export formats must not repeat"):
        parse_spec({**BASE, "export": {"formats": ["onnx", "onnx"]}})
    with pytest.raises(SpecError, match="kind 'export' needs an export section"):
        parse_spec(BASE)


@pytest.mark.parametrize(
    ("export", "keys"),
    [
        ({"formats": ["onnx"]}, ["onnx"]),
        ({"formats": ["engine"]}, ["engine-fp16"]),
        ({"formats": ["onnx", "engine"], "int8": True}, ["onnx", "engine-fp16", "engine-int8"]),
        ({"formats": ["engine"], "half": False, "int8": True}, ["engine-int8"]),
        ({"formats": ["engine"], "half": False}, ["engine-fp32"]),
    ],
)
def test_each_engine_precision_is_its_own_format(export: dict[str, object],
                                                 keys: list[str]) -> None:
    assert [k for k, _ in planned_formats(ExportParams.model_validate(export))] == keys


def test_thresholds_come_from_the_spec_gates() -> None:
    gates = ExportGates(onnx=0.001, fp16=0.002, int8=0.03)
    assert [threshold_for(k, gates) for k in ("onnx", "engine-fp16", "engine-int8",
                                              "engine-fp32")] == [0.001, 0.002, 0.03, 0.001]


@pytest.mark.parametrize(("delta", "status"), [(0.0, "passed"), (-0.005, "passed"),
                                               (0.005, "passed"), (-0.0051, "failed"),
                                               (0.02, "failed")])
def test_the_gate_is_on_the_absolute_map_delta(delta: float, status: str) -> None:
    result = FormatResult("onnx", threshold=0.005, map50_95=0.5 + delta,
                          reference_map50_95=0.5, map_delta=delta)
    result.judge()
    assert result.status == status
    assert ("exceeds the gate 0.0050" in result.reason) is (status == "failed")


def test_results_round_trip_through_the_report() -> None:
    result = FormatResult("engine-int8", status="failed", reason="why", map_delta=-0.1,
                          latency={"p50": 0.01, "p95": 0.02})
    assert FormatResult.from_json(result.to_json()) == result


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("NVIDIA H100 80GB HBM3", "nvidia-h100"),
        ("NVIDIA H200", "nvidia-h200"),
        ("NVIDIA A100-SXM4-40GB", "nvidia-a100-sxm4"),
        ("NVIDIA GeForce RTX 4090", "nvidia-geforce-rtx-4090"),
        ("Tesla T4", "tesla-t4"),
    ],
)
def test_engines_are_named_after_the_gpu_they_were_built_on(name: str, slug: str) -> None:
    assert gpu_slug(name) == slug
    gpu = GpuInfo(0, name, gpu_slug(name), "9.0")
    assert engine_file_name(gpu, "fp16") == f"model-{slug}-fp16.engine"


def test_latency_needs_at_least_50_timed_runs() -> None:
    with pytest.raises(SpecError, match="export.gates.latency_runs: Input should be greater"):
        parse_spec({**BASE, "export": {"gates": {"latency_runs": 10}}})
