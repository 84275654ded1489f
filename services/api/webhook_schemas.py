"""Wire schemas of /v1/webhooks (beside services/api/schemas.py: built from domain objects)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.store.domain import Delivery, Webhook
from trainforge.text import SafeText
from trainforge.webhooks import EventType


class WebhookCreate(BaseModel):
    """``POST /v1/webhooks`` body."""

    model_config = ConfigDict(extra="forbid")

    url: SafeText = Field(min_length=1, max_length=2048,
                     description="https URL the events are POSTed to (docs/operations.md says "
                     "which destinations this service accepts)")
    events: list[EventType] = Field(min_length=1, max_length=len(EventType),
                                    description="the event types to send")
    description: SafeText = Field("", max_length=200,
                                  description="what it is for, for people")

    @field_validator("events")
    @classmethod
    def _once_each(cls, value: list[EventType]) -> list[EventType]:
        if len(set(value)) != len(value):
            raise ValueError("name each event type once")
        return value


class WebhookListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200, description="next_cursor of a page")


class WebhookOut(BaseModel):
    """A subscription as clients see it; its secret is shown once, at creation."""

    model_config = ConfigDict(frozen=True)

    id: str
    url: str
    events: list[EventType]
    description: str
    created_at: datetime
    enabled: bool = Field(description="false once a delivery failed every attempt")
    disabled_at: datetime | None
    disabled_reason: str | None

    @classmethod
    def from_domain(cls, webhook: Webhook) -> WebhookOut:
        return cls(id=webhook.id, url=webhook.url,
                   events=[EventType(e) for e in webhook.events],
                   description=webhook.description, created_at=webhook.created_at,
                   enabled=webhook.disabled_at is None, disabled_at=webhook.disabled_at,
                   disabled_reason=webhook.disabled_reason)


class WebhookCreated(WebhookOut):
    """The new subscription with its signing secret: store it now, it is never shown again."""

    secret: str = Field(description="whsec_…: the Standard Webhooks signing secret")


class WebhookPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[WebhookOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class DeliveryOut(BaseModel):
    """One event for one subscription, and how its attempts went."""

    model_config = ConfigDict(frozen=True)

    id: int
    event_id: str = Field(description="the webhook-id header: the same on every attempt")
    event_type: EventType
    event_time: datetime
    state: str = Field(description="pending, delivered, failed (every attempt failed) or "
                       "abandoned (the subscription was disabled first)")
    attempts: int
    next_attempt_at: datetime | None = Field(description="when it is tried next (pending)")
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="the receiver's last HTTP status")
    last_error: str | None = Field(description="why the last attempt failed")
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def from_domain(cls, delivery: Delivery) -> DeliveryOut:
        return cls.model_validate(delivery, from_attributes=True)


class DeliveryPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    items: list[DeliveryOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")
