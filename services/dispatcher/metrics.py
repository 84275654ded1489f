"""The dispatcher's own metrics (job-lifecycle metrics live in services/store/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DISPATCHER_ERRORS = Counter(
    "trainforge_dispatcher_errors_total",
    "Backend calls that raised, by backend and operation (launch, poll, cancel, loop, schedules).",
    ["backend", "operation"],
)
LAST_LOOP = Gauge(
    "trainforge_dispatcher_last_loop_timestamp_seconds",
    "Unix time at which the dispatcher last finished a loop (alert when it stops moving).",
)
SCHEDULE_RUNS = Counter(
    "trainforge_schedule_runs_total",
    "Fire times of schedules settled by this dispatcher, by outcome (submitted, skipped: the "
    "dataset had not changed, failed: no job, see the run's message).",
    ["outcome"],
)
SCHEDULER_LEADER = Gauge(
    "trainforge_scheduler_leader",
    "1 while this dispatcher leads scheduling (fires schedules); exactly one should.",
)
WEBHOOK_ATTEMPTS = Counter(
    "trainforge_webhook_attempts_total",
    "Webhook delivery attempts by outcome: delivered (2xx), http_error (any other status, "
    "redirects included), timeout, unreachable, refused (the destination policy), error.",
    ["outcome"],
)
WEBHOOKS_DISABLED = Counter(
    "trainforge_webhooks_disabled_total",
    "Webhook subscriptions disabled because a delivery failed every attempt.",
)
WEBHOOK_PENDING = Gauge(
    "trainforge_webhook_deliveries_pending",
    "Webhook deliveries waiting for their first or next attempt (enabled subscriptions).",
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "trainforge_webhook_oldest_pending_seconds",
    "Age of the oldest pending webhook delivery (0 when none): receivers down, or no relay.",
)
