"""The dispatcher's own metrics (job-lifecycle metrics live in services/store/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DISPATCHER_ERRORS = Counter(
    "trainforge_dispatcher_errors_total",
    "Backend calls that raised, by backend and operation (launch, poll, cancel, loop).",
    ["backend", "operation"],
)
LAST_LOOP = Gauge(
    "trainforge_dispatcher_last_loop_timestamp_seconds",
    "Unix time at which the dispatcher last finished a loop (alert when it stops moving).",
)
