"""Webhook use cases behind the /v1/webhooks routes: subscribe, list, unsubscribe, deliveries.

The API stores subscriptions; the dispatcher delivers (services/dispatcher/webhook_relay.py).
A URL is checked here against the destination policy, every address it resolves to included
(services/webhooks/destinations.py), and again by every delivery on the address it connects
to. The signing secret is generated here, returned once and stored sealed.
"""

from __future__ import annotations

import logging

from services.api.jobs import decode_cursor, encode_cursor
from services.api.state import AppState
from services.api.webhook_schemas import (
    DeliveryOut,
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
    WebhookPage,
)
from services.store import webhooks as repo
from services.store.clock import utcnow
from services.store.domain import NewWebhook
from services.store.ids import new_webhook_id
from services.webhooks import secrets
from trainforge.errors import LimitExceeded
from trainforge.webhooks import new_secret

log = logging.getLogger(__name__)

#: Subscriptions one team may have (disabled ones count until deleted).
MAX_WEBHOOKS_PER_TEAM = 50


def create(state: AppState, team: str, body: WebhookCreate) -> WebhookCreated:
    """Subscribe ``body.url`` to ``body.events`` of the team's objects.

    Raises:
        WebhookDestinationRefused: the URL is not one webhooks may call (422).
        LimitExceeded: the team has :data:`MAX_WEBHOOKS_PER_TEAM` subscriptions (403).
    """
    policy = state.settings.webhook_destinations()
    policy.resolve(policy.check_url(body.url))
    webhook_id = new_webhook_id()
    secret = new_secret()
    new = NewWebhook(id=webhook_id, team=team, url=body.url,
                     events=tuple(e.value for e in body.events), description=body.description,
                     secret_sealed=secrets.seal(state.secret_key, webhook_id, secret))
    with state.db.transaction() as session:
        if repo.count_webhooks(session, team) >= MAX_WEBHOOKS_PER_TEAM:
            raise LimitExceeded(f"team {team!r} has {MAX_WEBHOOKS_PER_TEAM} webhooks, the most "
                                "it may have; delete one first")
        webhook = repo.insert_webhook(session, new, now=utcnow())
    log.info("webhook %s created by team %s (%s → %s)", webhook.id, team,
             ",".join(webhook.events), body.url)
    return WebhookCreated(**WebhookOut.from_domain(webhook).model_dump(), secret=secret)


def list_page(state: AppState, team: str, *, limit: int, cursor: str | None) -> WebhookPage:
    before = decode_cursor(cursor) if cursor else None
    with state.db.transaction() as session:
        webhooks, next_seq = repo.list_webhooks(session, team, limit=limit, before_seq=before)
    return WebhookPage(items=[WebhookOut.from_domain(w) for w in webhooks],
                       next_cursor=encode_cursor(next_seq) if next_seq is not None else None)


def delete(state: AppState, team: str, webhook_id: str) -> None:
    """Raises: WebhookNotFound: no such subscription of the team."""
    with state.db.transaction() as session:
        repo.delete_webhook(session, webhook_id, team=team)
    log.info("webhook %s deleted by team %s", webhook_id, team)


def deliveries_page(state: AppState, team: str, webhook_id: str, *, limit: int,
                    cursor: str | None) -> DeliveryPage:
    """Raises: WebhookNotFound: no such subscription of the team."""
    before = decode_cursor(cursor) if cursor else None
    with state.db.transaction() as session:
        repo.get_webhook(session, webhook_id, team=team)  # 404 for another team's
        items, next_id = repo.list_deliveries(session, webhook_id, limit=limit,
                                              before_id=before)
    return DeliveryPage(items=[DeliveryOut.from_domain(d) for d in items],
                        next_cursor=encode_cursor(next_id) if next_id is not None else None)
