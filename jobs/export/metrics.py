"""Export metrics, pushed to a Prometheus Pushgateway when an export ends.

An export is a batch job: nothing is left to scrape when it ends, so it pushes. Metrics are
grouped by model (job label ``trainforge_export``, grouping key ``model``). Pushes use POST
(``pushadd``), which replaces only the metric names pushed: a failed export therefore leaves
the previous ``trainforge_export_last_success_timestamp_seconds`` in place, so an alert on
its age keeps working.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, generate_latest, pushadd_to_gateway

from jobs.export.results import FormatResult
from trainforge.constants import ENV_PUSHGATEWAY_URL

log = logging.getLogger(__name__)

PUSH_JOB = "trainforge_export"


@dataclass(frozen=True)
class ExportMetrics:
    """What one export run reports."""

    model: str
    duration_s: float
    succeeded: bool
    finished_at: float
    formats: tuple[FormatResult, ...] = ()
    #: PyTorch forward latency per device ("cpu", "cuda:0"), labelled ``pytorch-<kind>``.
    reference_latency: tuple[tuple[str, float, float], ...] = ()


def build_registry(metrics: ExportMetrics) -> CollectorRegistry:
    """The metrics of one export run in a fresh registry (names as the dashboards expect)."""
    registry = CollectorRegistry()
    Gauge("trainforge_export_duration_seconds", "Wall time of the last export run",
          registry=registry).set(metrics.duration_s)
    if metrics.succeeded:
        Gauge("trainforge_export_last_success_timestamp_seconds",
              "Unix time the last successful export of this model finished",
              registry=registry).set(metrics.finished_at)
    measured = [f for f in metrics.formats if f.status != "skipped"]
    size = Gauge("trainforge_export_artifact_bytes", "Size of the exported artifact",
                 ["format"], registry=registry)
    delta = Gauge("trainforge_export_map_delta",
                  "mAP50-95 of the format minus best.pt's, evaluated like for like",
                  ["format"], registry=registry)
    latency = Gauge("trainforge_export_latency_seconds",
                    "Forward-pass latency over warm runs at the export batch",
                    ["format", "quantile"], registry=registry)
    passed = Gauge("trainforge_export_gate_passed", "1 if the format passed its accuracy gate",
                   ["format"], registry=registry)
    for result in measured:
        if result.bytes is not None:
            size.labels(result.key).set(result.bytes)
        if result.map_delta is not None:
            delta.labels(result.key).set(result.map_delta)
        if result.latency:
            latency.labels(result.key, "0.5").set(result.latency["p50"])
            latency.labels(result.key, "0.95").set(result.latency["p95"])
        passed.labels(result.key).set(1 if result.status == "passed" else 0)
    for label, p50, p95 in metrics.reference_latency:
        latency.labels(label, "0.5").set(p50)
        latency.labels(label, "0.95").set(p95)
    return registry


def exposition(metrics: ExportMetrics) -> bytes:
    """The text exposition of what :func:`push` sends (for ``promtool check metrics``)."""
    return bytes(generate_latest(build_registry(metrics)))


def push(metrics: ExportMetrics, gateway: str | None = None) -> bool:
    """Push to ``gateway`` (default: TRAINFORGE_PUSHGATEWAY_URL; unset disables pushing).

    A Pushgateway outage must not fail an export that succeeded, so errors are logged.

    Returns:
        True if the push was accepted.
    """
    gateway = gateway or os.environ.get(ENV_PUSHGATEWAY_URL)
    if not gateway:
        log.info("%s is not set; export metrics not pushed", ENV_PUSHGATEWAY_URL)
        return False
    try:
        pushadd_to_gateway(gateway, job=PUSH_JOB, registry=build_registry(metrics),
                           grouping_key={"model": metrics.model}, timeout=10)
    except OSError as exc:  # URLError/HTTPError are OSErrors
        log.warning("pushing export metrics to %s failed: %s", gateway, exc)
        return False
    log.info("export metrics for %s pushed to %s", metrics.model, gateway)
    return True


def reference_series(results: Iterable[FormatResult]) -> tuple[tuple[str, float, float], ...]:
    """One ``pytorch-cpu`` / ``pytorch-cuda`` latency series per device a format was timed on."""
    series: dict[str, tuple[float, float]] = {}
    for result in results:
        ref = result.reference_latency
        if ref:
            kind = "cpu" if str(ref["device"]) == "cpu" else "cuda"
            series.setdefault(f"pytorch-{kind}", (float(ref["p50"]), float(ref["p95"])))
    return tuple((label, p50, p95) for label, (p50, p95) in sorted(series.items()))
