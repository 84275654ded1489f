"""/v1/webhooks: signed event deliveries to a team's tools (subscribe, list, delete, deliveries)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from services.api import webhooks as service
from services.api.auth import State, Team
from services.api.routes._docs import problems
from services.api.webhook_schemas import (
    DeliveryPage,
    WebhookCreate,
    WebhookCreated,
    WebhookListQuery,
    WebhookPage,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

WebhookId = Annotated[str, Path(alias="id", description="webhook id (w…)")]


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=problems(400, 401, 403, 413, 422, 503),
    summary="Subscribe a URL to events of the team's jobs, models and schedules; the signing "
            "secret is in this answer only",
)
def create_webhook(body: WebhookCreate, response: Response, state: State,
                   team: Team) -> WebhookCreated:
    webhook = service.create(state, team, body)
    response.headers["Location"] = f"/v1/webhooks/{webhook.id}"
    return webhook


@router.get("", response_model=WebhookPage, responses=problems(401, 422),
            summary="List the team's webhooks (never their secrets)")
def list_webhooks(state: State, team: Team,
                  query: Annotated[WebhookListQuery, Query()]) -> WebhookPage:
    return service.list_page(state, team, limit=query.limit, cursor=query.cursor)


@router.delete("/{id}", status_code=204, response_class=Response, responses=problems(401, 404),
               summary="Delete a webhook and its deliveries; nothing more is sent to it")
def delete_webhook(webhook_id: WebhookId, state: State, team: Team) -> Response:
    service.delete(state, team, webhook_id)
    return Response(status_code=204)


@router.get(
    "/{id}/deliveries",
    response_model=DeliveryPage,
    responses=problems(401, 404, 422),
    summary="A webhook's deliveries, newest first: state, attempts, the receiver's last answer",
)
def webhook_deliveries(webhook_id: WebhookId, state: State, team: Team,
                       query: Annotated[WebhookListQuery, Query()]) -> DeliveryPage:
    return service.deliveries_page(state, team, webhook_id, limit=query.limit,
                                   cursor=query.cursor)
