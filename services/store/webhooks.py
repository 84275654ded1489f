"""The webhook repository: subscriptions, the fan-out of events, and deliveries.

Like the other repositories, every function takes the caller's :class:`Session` and never
commits. Events are written by services/store/outbox.py; the dispatcher's relay
(services/dispatcher/webhook_relay.py) calls the functions below in this order:

1. :func:`fan_out`: a ready event becomes one pending delivery per subscription of its team
   that wants its type and existed when it happened (UNIQUE (webhook_id, event_id): never two);
2. :func:`claim_due`: due deliveries are claimed for one attempt with a lease (PostgreSQL:
   ``FOR UPDATE SKIP LOCKED``, so dispatcher replicas never claim the same one; SQLite's
   transactions are serialised). The POST happens outside any transaction;
3. :func:`record_attempt`: the outcome, under the same claim. A dispatcher killed between 2
   and 3 leaves the lease to expire, and the delivery is sent again: at least once, and a
   receiver de-duplicates by ``webhook-id``. A delivery that failed its last attempt disables
   its subscription (with a ``webhook.disabled`` event).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.store import outbox
from services.store.domain import Delivery, DeliveryTask, NewWebhook, Webhook, WebhookEvent
from services.store.outbox import EventState
from services.store.rows import owned_row, page
from services.store.tables import WebhookDeliveryRow, WebhookEventRow, WebhookRow
from trainforge.errors import WebhookNotFound
from trainforge.webhooks import EventType

log = logging.getLogger(__name__)

_DELIVERIES = cast(Table, WebhookDeliveryRow.__table__)


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt failed; its subscription was disabled
    ABANDONED = "abandoned"  # its subscription was disabled before it was delivered


# --- subscriptions --------------------------------------------------------------------------


def _webhook(row: WebhookRow) -> Webhook:
    return Webhook(id=row.id, team=row.team, url=row.url, events=tuple(row.events),
                   description=row.description, created_at=row.created_at,
                   disabled_at=row.disabled_at, disabled_reason=row.disabled_reason)


def insert_webhook(session: Session, new: NewWebhook, *, now: datetime) -> Webhook:
    """Create a subscription; it hears about events that happen from ``now`` on."""
    row = WebhookRow(id=new.id, team=new.team, url=new.url, events=list(new.events),
                     description=new.description, secret_sealed=new.secret_sealed,
                     created_at=now)
    session.add(row)
    session.flush()
    return _webhook(row)


def count_webhooks(session: Session, team: str) -> int:
    return int(session.scalar(select(func.count()).where(WebhookRow.team == team)) or 0)


def list_webhooks(session: Session, team: str, *, limit: int = 50,
                  before_seq: int | None = None) -> tuple[list[Webhook], int | None]:
    """A page of a team's subscriptions, newest first, and the cursor of the next page."""
    query = select(WebhookRow).where(WebhookRow.team == team)
    if before_seq is not None:
        query = query.where(WebhookRow.seq < before_seq)
    rows, next_seq = page(session, query.order_by(WebhookRow.seq.desc()), limit,
                          lambda r: r.seq)
    return [_webhook(r) for r in rows], next_seq


def get_webhook(session: Session, webhook_id: str, *, team: str) -> Webhook:
    """Raises: WebhookNotFound: no such subscription of ``team``."""
    return _webhook(owned_row(session, WebhookRow, webhook_id, team, lock=False,
                              missing=WebhookNotFound))


def delete_webhook(session: Session, webhook_id: str, *, team: str) -> None:
    """Delete a subscription and its deliveries (ON DELETE CASCADE); nothing more is sent.

    Raises:
        WebhookNotFound: no such subscription of ``team``.
    """
    session.delete(owned_row(session, WebhookRow, webhook_id, team, lock=True,
                             missing=WebhookNotFound))


def list_deliveries(session: Session, webhook_id: str, *, limit: int = 50,
                    before_id: int | None = None) -> tuple[list[Delivery], int | None]:
    """A page of a subscription's deliveries, newest first, and the cursor of the next page."""
    query = (select(WebhookDeliveryRow, WebhookEventRow.type, WebhookEventRow.time)
             .join(WebhookEventRow, WebhookEventRow.id == WebhookDeliveryRow.event_id)
             .where(WebhookDeliveryRow.webhook_id == webhook_id))
    if before_id is not None:
        query = query.where(WebhookDeliveryRow.id < before_id)
    rows = session.execute(query.order_by(WebhookDeliveryRow.id.desc()).limit(limit + 1)).all()
    items = [
        Delivery(id=d.id, webhook_id=d.webhook_id, event_id=d.event_id, event_type=type_,
                 event_time=time, state=d.state, attempts=d.attempts,
                 next_attempt_at=d.next_attempt_at if d.state == DeliveryState.PENDING else None,
                 last_attempt_at=d.last_attempt_at, last_status=d.last_status,
                 last_error=d.last_error, created_at=d.created_at, finished_at=d.finished_at)
        for d, type_, time in rows[:limit]
    ]
    return items, (items[-1].id if len(rows) > limit else None)


# --- fan-out --------------------------------------------------------------------------------


def _event(row: WebhookEventRow) -> WebhookEvent:
    return WebhookEvent(id=row.id, team=row.team, type=row.type, time=row.time,
                        data=dict(row.data), expand=row.expand)


def unconfirmed_before(session: Session, cutoff: datetime, *, limit: int = 50
                       ) -> list[WebhookEvent]:
    """Alias moves the API recorded before ``cutoff`` and never confirmed (it died)."""
    rows = session.scalars(
        select(WebhookEventRow)
        .where(WebhookEventRow.state == EventState.UNCONFIRMED.value,
               WebhookEventRow.created_at < cutoff)
        .order_by(WebhookEventRow.seq).limit(limit))
    return [_event(r) for r in rows]


def resolve_unconfirmed(session: Session, event: WebhookEvent,
                        written: dict[str, Any] | None) -> None:
    """Settle an unconfirmed alias move from the alias log: ``written`` is the record found at
    its sequence number (its event is delivered), or None (the move never happened: dropped)."""
    if written is not None:
        outbox.confirm_alias_move(session, event.team, written)
    else:
        outbox.abandon_alias_move(session, event.team, event.data)


def ready_events(session: Session, *, limit: int = 100) -> list[WebhookEvent]:
    """Events to fan out, oldest first (read without locks: :func:`fan_out` locks each)."""
    rows = session.scalars(
        select(WebhookEventRow).where(WebhookEventRow.state == EventState.READY.value)
        .order_by(WebhookEventRow.seq).limit(limit))
    return [_event(r) for r in rows]


def has_subscriptions(session: Session, team: str) -> bool:
    """Whether the team has an enabled subscription (else a job's registry is not read)."""
    return bool(session.scalar(select(exists().where(WebhookRow.team == team,
                                                     WebhookRow.disabled_at.is_(None)))))


@dataclass(frozen=True, slots=True)
class Derived:
    """An event read from the registry for a finished job (see outbox's table)."""

    type: EventType
    key: str
    time: datetime
    data: dict[str, Any]


def fan_out(session: Session, event: WebhookEvent, *, derived: Sequence[Derived] = (),
            now: datetime) -> int | None:
    """Record ``derived`` events and make one delivery of ``event`` per subscription that
    wants it; mark it fanned.

    Returns:
        The deliveries created, or None when another dispatcher holds or has fanned the event.
    """
    row = session.scalars(
        select(WebhookEventRow)
        .where(WebhookEventRow.id == event.id, WebhookEventRow.state == EventState.READY.value)
        .with_for_update(skip_locked=True)).one_or_none()
    if row is None:
        return None
    for found in derived:
        outbox.record(session, team=event.team, type_=found.type, key=found.key,
                      time=found.time, data=found.data)
    subscribers = [
        w.id for w in session.scalars(
            select(WebhookRow).where(WebhookRow.team == event.team,
                                     WebhookRow.disabled_at.is_(None),
                                     WebhookRow.created_at <= event.time))
        if event.type in w.events
    ]
    if subscribers:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(
            dialect.insert(_DELIVERIES)
            .values([{"webhook_id": w, "event_id": event.id,
                      "state": DeliveryState.PENDING.value, "attempts": 0,
                      "next_attempt_at": now, "created_at": now} for w in subscribers])
            .on_conflict_do_nothing(index_elements=["webhook_id", "event_id"]))
    row.state = EventState.FANNED.value
    return len(subscribers)


# --- deliveries -----------------------------------------------------------------------------


def claim_due(session: Session, *, owner: str, now: datetime, lease: timedelta,
              limit: int) -> list[DeliveryTask]:
    """Claim up to ``limit`` due deliveries of enabled subscriptions for one attempt each.

    Each is due again at ``now + lease`` unless :func:`record_attempt` settles it first.
    """
    rows = list(session.scalars(
        select(WebhookDeliveryRow)
        .join(WebhookRow, WebhookRow.id == WebhookDeliveryRow.webhook_id)
        .where(WebhookDeliveryRow.state == DeliveryState.PENDING.value,
               WebhookDeliveryRow.next_attempt_at <= now,
               WebhookRow.disabled_at.is_(None))
        .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
        .limit(limit)
        .with_for_update(of=WebhookDeliveryRow, skip_locked=True)))
    if not rows:
        return []
    hooks = {w.id: w for w in session.scalars(
        select(WebhookRow).where(WebhookRow.id.in_({r.webhook_id for r in rows})))}
    events = {e.id: _event(e) for e in session.scalars(
        select(WebhookEventRow).where(WebhookEventRow.id.in_({r.event_id for r in rows})))}
    tasks = []
    for row in rows:
        row.attempts += 1
        row.claimed_by = owner
        row.last_attempt_at = now
        row.next_attempt_at = now + lease
        hook = hooks[row.webhook_id]
        tasks.append(DeliveryTask(delivery_id=row.id, attempt=row.attempts, webhook_id=hook.id,
                                  url=hook.url, secret_sealed=hook.secret_sealed,
                                  event=events[row.event_id]))
    return tasks


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt of a claimed delivery came to."""

    delivered: bool
    status: int | None
    error: str | None
    #: When to try again; None after a failure: it was the last attempt.
    retry_at: datetime | None = None


def record_attempt(session: Session, task: DeliveryTask, outcome: AttemptOutcome, *,
                   owner: str, now: datetime) -> DeliveryState | None:
    """Settle a claimed attempt. A failed last attempt disables the subscription: its other
    pending deliveries are abandoned and the team gets a ``webhook.disabled`` event.

    Returns:
        The delivery's state, or None when the claim is no longer this dispatcher's (its lease
        ran out and another one took the delivery over; that one records it).
    """
    row = session.scalars(
        select(WebhookDeliveryRow).where(WebhookDeliveryRow.id == task.delivery_id)
        .with_for_update()).one_or_none()
    if (row is None or row.state != DeliveryState.PENDING.value or row.claimed_by != owner
            or row.attempts != task.attempt):
        return None
    row.claimed_by = None
    row.last_status = outcome.status
    row.last_error = outcome.error
    if outcome.delivered:
        row.state = DeliveryState.DELIVERED.value
        row.finished_at = now
    elif outcome.retry_at is not None:
        row.next_attempt_at = outcome.retry_at
    else:
        row.state = DeliveryState.FAILED.value
        row.finished_at = now
        _disable(session, task, row, now)
    return DeliveryState(row.state)


def _disable(session: Session, task: DeliveryTask, failed: WebhookDeliveryRow,
             now: datetime) -> None:
    hook = session.scalars(select(WebhookRow).where(WebhookRow.id == task.webhook_id)
                           .with_for_update()).one_or_none()
    if hook is None or hook.disabled_at is not None:
        return
    hook.disabled_at = now
    hook.disabled_reason = (
        f"delivery of event {task.event.id} ({task.event.type}) failed {failed.attempts} "
        f"attempts since {failed.created_at.isoformat()}; last: {failed.last_error}")[:2000]
    session.execute(
        update(_DELIVERIES)
        .where(_DELIVERIES.c.webhook_id == hook.id,
               _DELIVERIES.c.state == DeliveryState.PENDING.value)
        .values(state=DeliveryState.ABANDONED.value, finished_at=now, claimed_by=None))
    outbox.record(session, team=hook.team, type_=EventType.WEBHOOK_DISABLED,
                  key=f"{hook.id}@{now.isoformat()}", time=now,
                  data={"webhook": {"id": hook.id, "url": hook.url, "events": list(hook.events),
                                    "disabled_at": now.isoformat(),
                                    "disabled_reason": hook.disabled_reason}})
    log.warning("webhook %s of team %s disabled: %s", hook.id, hook.team, hook.disabled_reason)


def backlog(session: Session) -> tuple[int, datetime | None]:
    """Pending deliveries of enabled subscriptions, and when the oldest was created."""
    count, oldest = session.execute(
        select(func.count(), func.min(WebhookDeliveryRow.created_at))
        .join(WebhookRow, WebhookRow.id == WebhookDeliveryRow.webhook_id)
        .where(WebhookDeliveryRow.state == DeliveryState.PENDING.value,
               WebhookRow.disabled_at.is_(None))).one()
    return int(count), oldest


def prune(session: Session, before: datetime) -> int:
    """Delete fanned events older than ``before`` that no delivery still waits for (their
    deliveries go with them). Returns how many."""
    waiting = exists().where(WebhookDeliveryRow.event_id == WebhookEventRow.id,
                             WebhookDeliveryRow.state == DeliveryState.PENDING.value)
    result = session.execute(
        delete(WebhookEventRow)
        .where(WebhookEventRow.state == EventState.FANNED.value,
               WebhookEventRow.created_at < before, ~waiting)
        .execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]
