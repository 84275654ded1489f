"""Export metrics reach a real Pushgateway under the shared names, and pass promtool's lint."""

from __future__ import annotations

import subprocess

from jobs.export.metrics import ExportMetrics, exposition, push, reference_series
from jobs.export.results import FormatResult
from tests.fixtures.export import sample, scrape

PROMTOOL = "/usr/bin/promtool"


def _results(delta: float = -0.002) -> tuple[FormatResult, ...]:
    cpu = {"p50": 0.020, "p95": 0.031, "mean": 0.022, "runs": 50, "batch": 1, "device": "cpu",
           "threads": 1}
    onnx = FormatResult("onnx", status="passed", bytes=12_345, map_delta=delta,
                        latency={**cpu, "p50": 0.011, "p95": 0.015, "mean": 0.012},
                        reference_latency=cpu)
    int8 = FormatResult("engine-int8", status="failed", bytes=4_321, map_delta=-0.09,
                        latency={"p50": 0.001, "p95": 0.002, "mean": 0.0012, "runs": 50,
                                 "device": "cuda:0"},
                        reference_latency={"p50": 0.004, "p95": 0.005, "mean": 0.0042,
                                           "runs": 50, "device": "cuda:0"})
    fp16 = FormatResult("engine-fp16", status="skipped", reason="no CUDA GPU")
    return onnx, int8, fp16


def _metrics(succeeded: bool, duration: float, finished: float,
             formats: tuple[FormatResult, ...]) -> ExportMetrics:
    return ExportMetrics("ppe-detector", duration, succeeded, finished, formats,
                         reference_series(formats))


def test_a_push_lands_in_the_pushgateway_grouped_by_model(pushgateway: str) -> None:
    assert push(_metrics(True, 93.5, 1_800_000_000.0, _results()), pushgateway)
    got = scrape(pushgateway)
    group = {"job": "trainforge_export", "model": "ppe-detector"}
    assert sample(got, "trainforge_export_duration_seconds", **group) == 93.5
    assert sample(got, "trainforge_export_last_success_timestamp_seconds", **group) == 1.8e9
    assert sample(got, "trainforge_export_artifact_bytes", format="onnx", **group) == 12_345
    assert sample(got, "trainforge_export_map_delta", format="onnx", **group) == -0.002
    assert sample(got, "trainforge_export_map_delta", format="engine-int8", **group) == -0.09
    assert sample(got, "trainforge_export_gate_passed", format="onnx", **group) == 1
    assert sample(got, "trainforge_export_gate_passed", format="engine-int8", **group) == 0
    assert sample(got, "trainforge_export_latency_seconds", format="onnx", quantile="0.5",
                  **group) == 0.011
    assert sample(got, "trainforge_export_latency_seconds", format="onnx", quantile="0.95",
                  **group) == 0.015
    assert sample(got, "trainforge_export_latency_seconds", format="pytorch-cpu",
                  quantile="0.5", **group) == 0.020
    assert sample(got, "trainforge_export_latency_seconds", format="pytorch-cuda",
                  quantile="0.95", **group) == 0.005
    # A skipped format has no numbers, so it reports none (neither passed nor failed).
    assert sample(got, "trainforge_export_gate_passed", format="engine-fp16") is None


def test_a_failed_export_keeps_the_last_success_timestamp(pushgateway: str) -> None:
    assert push(_metrics(True, 90.0, 1_800_000_000.0, _results()), pushgateway)
    assert push(_metrics(False, 12.0, 1_800_000_500.0, _results(delta=-0.2)), pushgateway)
    got = scrape(pushgateway)
    assert sample(got, "trainforge_export_last_success_timestamp_seconds",
                  model="ppe-detector") == 1.8e9
    assert sample(got, "trainforge_export_duration_seconds", model="ppe-detector") == 12.0
    assert sample(got, "trainforge_export_map_delta", format="onnx") == -0.2


def test_an_unreachable_pushgateway_does_not_fail_the_export() -> None:
    from tests.fixtures.network import free_port

    assert push(_metrics(True, 1.0, 1.0, ()), f"127.0.0.1:{free_port()}") is False


def test_promtool_accepts_what_is_pushed() -> None:
    text = exposition(_metrics(True, 93.5, 1_800_000_000.0, _results()))
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                           timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert b"trainforge_export_latency_seconds_count" in text
