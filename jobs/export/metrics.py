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
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest, pushadd_to_gateway
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

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
    #: best.pt's latency per device kind, as ``pytorch-cpu`` / ``pytorch-cuda`` format series.
    reference_latency: tuple[tuple[str, dict[str, Any]], ...] = ()


class _LatencySummary(Collector):
    """``trainforge_export_latency_seconds{format,quantile}`` as a summary.

    The measured p50/p95 are quantiles, which the exposition format only allows on a summary
    (``promtool check metrics`` rejects a gauge with a ``quantile`` label); ``_sum`` and
    ``_count`` are those of the timed runs.
    """

    name = "trainforge_export_latency_seconds"

    def __init__(self, series: list[tuple[str, dict[str, Any]]]) -> None:
        self.series = series

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, "Forward-pass latency over warm runs at the export batch",
                        "summary")
        for label, latency in self.series:
            metric.add_sample(self.name, {"format": label, "quantile": "0.5"},
                              float(latency["p50"]))
            metric.add_sample(self.name, {"format": label, "quantile": "0.95"},
                              float(latency["p95"]))
            runs = int(latency.get("runs", 0))
            metric.add_sample(self.name + "_sum", {"format": label},
                              float(latency.get("mean", 0.0)) * runs)
            metric.add_sample(self.name + "_count", {"format": label}, runs)
        yield metric


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
    passed = Gauge("trainforge_export_gate_passed", "1 if the format passed its accuracy gate",
                   ["format"], registry=registry)
    latency: list[tuple[str, dict[str, Any]]] = []
    for result in measured:
        if result.bytes is not None:
            size.labels(result.key).set(result.bytes)
        if result.map_delta is not None:
            delta.labels(result.key).set(result.map_delta)
        if result.latency:
            latency.append((result.key, result.latency))
        passed.labels(result.key).set(1 if result.status == "passed" else 0)
    latency += metrics.reference_latency
    if latency:
        registry.register(_LatencySummary(latency))
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


def reference_series(results: Iterable[FormatResult]) -> tuple[tuple[str, dict[str, Any]], ...]:
    """One ``pytorch-cpu`` / ``pytorch-cuda`` latency series per device a format was timed on."""
    series: dict[str, dict[str, Any]] = {}
    for result in results:
        ref = result.reference_latency
        if ref:
            kind = "cpu" if str(ref["device"]) == "cpu" else "cuda"
            series.setdefault(f"pytorch-{kind}", ref)
    return tuple(sorted(series.items()))
