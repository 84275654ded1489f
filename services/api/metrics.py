"""The API's metrics: request durations, and jobs per state read from the store at scrape.

``trainforge_jobs{state}`` is computed from the database when Prometheus scrapes, so it is
right whichever process changed the jobs (API, dispatcher) and after restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.store import jobs as repo
from services.store.db import Database

log = logging.getLogger(__name__)

HTTP_DURATION = Histogram(
    "trainforge_http_request_duration_seconds",
    "HTTP request duration by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

#: What a job's promote step may report (trainforge/promotion.py, jobs/train/promote.py).
PROMOTION_OUTCOMES = ("promoted", "kept", "conflict")
MODEL_PROMOTIONS = Counter(
    "trainforge_model_promotions",
    "Promotion decisions of jobs with a promote section, by model and outcome "
    "(promoted: the alias moved; kept: a rule failed; conflict: the alias moved meanwhile).",
    ["model", "outcome"],
)


class JobsByState(Collector):
    """``trainforge_jobs{state}``: jobs currently in each state."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "trainforge_jobs", "Jobs currently in each state.", labels=["state"]
        )
        try:
            with self.db.transaction() as session:
                counts = repo.count_by_state(session)
        except Exception as exc:  # a scrape must not fail because the database blipped
            log.warning("could not count jobs for /metrics: %s", exc)
            return
        for state, n in sorted(counts.items()):
            family.add_metric([state.value], n)
        yield family

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # collect() queries the database: don't run it at registration


def registry_for(db: Database) -> CollectorRegistry:
    """The per-app registry (process-wide metrics stay in the default REGISTRY)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsByState(db))
    return registry


def render(app_registry: CollectorRegistry) -> bytes:
    return generate_latest(REGISTRY) + generate_latest(app_registry)


class HttpMetricsMiddleware:
    """Times every HTTP request, labelled by the route template (not the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_DURATION.labels(
                method=scope["method"], route=template, status=str(status)
            ).observe(time.perf_counter() - start)
