"""The webhook relay: turns outbox events into signed deliveries, at least once.

Each pass (:meth:`WebhookRelay.run_once`), every dispatcher replica:

1. resolves alias moves the API recorded but never confirmed (it died between its intent and
   its confirmation; services/store/outbox.py), from the alias log in the object store;
2. fans out ready events to the team's subscriptions; a finished job's event first adds the
   model events its registry records hold (published, promoted or kept, the alias it moved);
3. claims due deliveries (services/store/webhooks.py: a lease, ``SKIP LOCKED``), POSTs each
   through the destination policy (services/webhooks/transport.py), signed the Standard
   Webhooks way, and records the outcome: delivered, or retried with exponential backoff, or,
   after the last attempt, failed, which disables the subscription.

A relay killed at any point loses nothing: what it had not recorded is done again by the next
pass of any replica (a delivery whose attempt was not recorded is sent again when its lease
runs out, with the same ``webhook-id``).

The dispatcher runs it in a thread of its own (:meth:`WebhookRelay.run`), so that a slow
receiver never holds up the jobs.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.dispatcher.metrics import (
    DISPATCHER_ERRORS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_OLDEST_PENDING,
    WEBHOOK_PENDING,
    WEBHOOKS_DISABLED,
)
from services.store import outbox
from services.store import webhooks as repo
from services.store.clock import utcnow
from services.store.db import Database
from services.store.domain import DeliveryTask, WebhookEvent
from services.store.webhooks import AttemptOutcome, DeliveryState, Derived
from services.webhooks import secrets, transport
from services.webhooks.destinations import DestinationPolicy
from trainforge import aliases, lifecycle, registry
from trainforge.access import team_models_uri
from trainforge.errors import StorageError
from trainforge.webhooks import HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, EventType, signature

log = logging.getLogger(__name__)

USER_AGENT = "trainforge-webhooks/1"
#: How long a claimed attempt is this relay's: longer than any attempt can take.
LEASE = timedelta(seconds=60)
#: Events fanned out per pass.
FAN_OUT_BATCH = 200


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: the n-th failed attempt waits ``base × 2^(n-1)``, at most
    ``max_delay``, ±``jitter``; after ``max_attempts`` attempts the delivery has failed."""

    base_s: float = 10.0
    max_delay_s: float = 3600.0
    max_attempts: int = 40
    jitter: float = 0.2

    def delay(self, failed_attempts: int, rng: random.Random) -> timedelta | None:
        """The wait after ``failed_attempts`` attempts, or None when it was the last."""
        if failed_attempts >= self.max_attempts:
            return None
        nominal = min(self.max_delay_s, self.base_s * 2 ** min(failed_attempts - 1, 60))
        return timedelta(seconds=nominal * rng.uniform(1 - self.jitter, 1 + self.jitter))

    def shortest_span(self) -> timedelta:
        """The least time between a delivery's first and last attempt (all jitter low)."""
        seconds = sum(min(self.max_delay_s, self.base_s * 2 ** min(n - 1, 60))
                      for n in range(1, self.max_attempts))
        return timedelta(seconds=seconds * (1 - self.jitter))


@dataclass(frozen=True)
class RelayConfig:
    """What a relay needs besides its database."""

    #: Root of the models store (each team's registry is under it).
    models_uri: str
    #: TRAINFORGE_SECRET_KEY: the key signing secrets are sealed under.
    secret_key: bytes
    destinations: DestinationPolicy
    owner: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float = 10.0
    max_response_bytes: int = 64 * 1024
    concurrency: int = 8
    poll_interval_s: float = 1.0
    #: How long an alias move the API recorded may stay unconfirmed before the relay reads
    #: the alias log to settle it (longer than any API request).
    confirm_grace: timedelta = timedelta(minutes=5)
    #: Delivered events are kept this long (GET /v1/webhooks/{id}/deliveries), then pruned.
    retention: timedelta = timedelta(days=14)
    ssl_context: ssl.SSLContext | None = None


def delivery_body(event: WebhookEvent) -> bytes:
    """The JSON body of every delivery of ``event`` (the same bytes on every attempt)."""
    body = {"id": event.id, "type": event.type, "time": event.time.isoformat(),
            "team": event.team, "data": event.data}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class WebhookRelay:
    """Delivers the outbox's events (see the module docstring).

    Args:
        db: the job store.
        config: see :class:`RelayConfig`.
        clock: the current time for due times and leases (tests pass a controllable one; the
            ``webhook-timestamp`` header is always the real time, which receivers check).
        fault: test hook called at "webhook_claimed" (attempts claimed, nothing sent) and
            "webhook_sent" (a POST answered, its outcome not recorded).
        rng: jitter source.
    """

    def __init__(self, db: Database, config: RelayConfig, *,
                 clock: Callable[[], datetime] = utcnow,
                 fault: Callable[[str], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.db = db
        self.config = config
        self._clock = clock
        self._fault = fault or (lambda point: None)
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_workers=config.concurrency,
                                        thread_name_prefix="webhook")
        self._pruned_at: datetime | None = None

    # --- the loop --------------------------------------------------------------------------

    def run_once(self) -> int:
        """One pass: settle intents, fan out, deliver what is due. Returns attempts made."""
        self._resolve_unconfirmed()
        self._fan_out()
        attempts = self._deliver()
        self._observe()
        self._prune()
        return attempts

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop`` is set; a failed pass is logged and counted."""
        while not stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                DISPATCHER_ERRORS.labels(backend="webhooks", operation="loop").inc()
                log.exception("webhook relay pass failed; retrying")
                busy = 0
            if not busy:
                stop.wait(self.config.poll_interval_s)
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- 1. alias moves the API did not confirm ----------------------------------------------

    def _resolve_unconfirmed(self) -> None:
        with self.db.transaction() as session:
            stale = repo.unconfirmed_before(session, self._clock() - self.config.confirm_grace)
        for event in stale:
            data = event.data
            root = team_models_uri(self.config.models_uri, event.team)
            try:
                written = aliases.record(root, str(data["model"]), str(data["alias"]),
                                         int(data["seq"]))
            except StorageError as exc:
                log.warning("cannot read the alias log for %s: %s; trying again", event.id, exc)
                continue
            with self.db.transaction() as session:
                repo.resolve_unconfirmed(session, event,
                                         written.to_json() if written is not None else None)
            log.info("alias move %s@%s #%s %s", data["model"], data["alias"], data["seq"],
                     "found in the alias log: delivering it" if written
                     else "was never written: dropped")

    # --- 2. fan-out ------------------------------------------------------------------------

    def _fan_out(self) -> None:
        with self.db.transaction() as session:
            events = repo.ready_events(session, limit=FAN_OUT_BATCH)
        for event in events:
            derived: list[Derived] = []
            if event.expand:
                with self.db.transaction() as session:
                    wanted = repo.has_subscriptions(session, event.team)
                try:
                    derived = self._registry_events(event) if wanted else []
                except StorageError as exc:
                    DISPATCHER_ERRORS.labels(backend="webhooks", operation="registry").inc()
                    log.warning("reading the registry for %s failed: %s; trying again",
                                event.id, exc)
                    continue
            with self.db.transaction() as session:
                repo.fan_out(session, event, derived=derived, now=self._clock())

    def _registry_events(self, event: WebhookEvent) -> list[Derived]:
        """What a finished job's registry records say: its version's publication, its promote
        step's verdict, and the alias move it made."""
        name, version = str(event.data["name"]), str(event.data["id"])
        root = team_models_uri(self.config.models_uri, event.team)
        found: list[Derived] = []
        manifest = registry.find_manifest(root, name, version)
        if manifest is not None:
            found.append(Derived(
                EventType.MODEL_PUBLISHED, f"{name}@{version}",
                _time(manifest.get("created_at"), event.time),
                {"model": name, **lifecycle.version_summary(manifest)}))
        decision = lifecycle.read_decision(root, name, version)
        if decision is None:
            return found
        promoted = decision.get("outcome") == "promoted"
        alias = str(decision.get("alias"))
        found.append(Derived(
            EventType.MODEL_PROMOTED if promoted else EventType.MODEL_KEPT,
            f"{name}@{version}/{alias}", _time(decision.get("decided_at"), event.time),
            {"model": name, **{k: decision.get(k) for k in (
                "version", "alias", "champion", "outcome", "summary", "decided_at")}}))
        if promoted:
            for move in aliases.history(root, name, alias):
                if move.version == version and move.actor == f"job {version}":
                    found.append(Derived(EventType.ALIAS_MOVED,
                                         outbox.alias_move_key(name, alias, move.seq),
                                         _time(move.moved_at, event.time), move.to_json()))
        return found

    # --- 3. deliveries ---------------------------------------------------------------------

    def _deliver(self) -> int:
        with self.db.transaction() as session:
            tasks = repo.claim_due(session, owner=self.config.owner, now=self._clock(),
                                   lease=LEASE, limit=self.config.concurrency * 2)
        if not tasks:
            return 0
        self._fault("webhook_claimed")
        for future in [self._pool.submit(self._attempt, task) for task in tasks]:
            future.result()
        return len(tasks)

    def _attempt(self, task: DeliveryTask) -> None:
        result = self._post(task)
        WEBHOOK_ATTEMPTS.labels(outcome=result.outcome).inc()
        self._fault("webhook_sent")
        now = self._clock()
        delay = None if result.delivered else self.config.retry.delay(task.attempt, self._rng)
        outcome = AttemptOutcome(delivered=result.delivered, status=result.status,
                                 error=result.error, retry_at=now + delay if delay else None)
        with self.db.transaction() as session:
            state = repo.record_attempt(session, task, outcome, owner=self.config.owner,
                                        now=now)
        if state is DeliveryState.FAILED:
            WEBHOOKS_DISABLED.inc()
        if not result.delivered:
            log.info("webhook %s: event %s attempt %d failed (%s)%s", task.webhook_id,
                     task.event.id, task.attempt, result.error,
                     f"; next in {delay.total_seconds():.0f}s" if delay else "; giving up")

    def _post(self, task: DeliveryTask) -> transport.Attempt:
        try:
            secret = secrets.unseal(self.config.secret_key, task.webhook_id, task.secret_sealed)
        except secrets.SecretUnreadable as exc:
            return transport.Attempt(None, str(exc), "error")
        body = delivery_body(task.event)
        timestamp = int(time.time())
        headers = {
            HEADER_ID: task.event.id,
            HEADER_TIMESTAMP: str(timestamp),
            HEADER_SIGNATURE: signature(secret, task.event.id, timestamp, body),
            "user-agent": USER_AGENT,
        }
        return transport.post(self.config.destinations, task.url, body, headers,
                              timeout_s=self.config.timeout_s,
                              max_response_bytes=self.config.max_response_bytes,
                              ssl_context=self.config.ssl_context)

    # --- housekeeping ----------------------------------------------------------------------

    def _observe(self) -> None:
        with self.db.transaction() as session:
            pending, oldest = repo.backlog(session)
        WEBHOOK_PENDING.set(pending)
        age = (self._clock() - oldest).total_seconds() if oldest is not None else 0.0
        WEBHOOK_OLDEST_PENDING.set(max(age, 0.0))

    def _prune(self) -> None:
        now = self._clock()
        if self._pruned_at is not None and now - self._pruned_at < timedelta(hours=1):
            return
        self._pruned_at = now
        with self.db.transaction() as session:
            removed = repo.prune(session, now - self.config.retention)
        if removed:
            log.info("pruned %d webhook event(s) older than %s", removed, self.config.retention)


def _time(value: Any, default: datetime) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return default
    return parsed if parsed.tzinfo is not None else default
