"""Webhooks as a receiver sees them: the event types, the headers and the signature.

trainforge signs every delivery the Standard Webhooks way (https://www.standardwebhooks.com):

- ``webhook-id``: the event's id, the same on every retry and for every subscription: a
  receiver de-duplicates by it;
- ``webhook-timestamp``: Unix seconds of the attempt;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed with
  the bytes of the subscription's secret (``whsec_<base64>``).

Any Standard Webhooks library verifies it (docs/api.md shows the ``standardwebhooks`` one).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from enum import StrEnum

SECRET_PREFIX = "whsec_"
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"
#: Random bytes in a new secret (Standard Webhooks asks for 24 to 64).
SECRET_BYTES = 32


class EventType(StrEnum):
    """What a subscription can hear about (docs/api.md describes each body's ``data``)."""

    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    MODEL_PUBLISHED = "model.published"
    MODEL_PROMOTED = "model.promoted"
    MODEL_KEPT = "model.kept"
    ALIAS_MOVED = "alias.moved"
    SCHEDULE_RUN_FAILED = "schedule.run_failed"
    #: One of the team's subscriptions failed every attempt of a delivery and was disabled.
    WEBHOOK_DISABLED = "webhook.disabled"


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` + base64 of :data:`SECRET_BYTES` random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_…`` secret stands for.

    Raises:
        ValueError: not a ``whsec_`` secret of base64 bytes.
    """
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    if not key:
        raise ValueError("empty webhook secret")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of one delivery attempt.

    Args:
        secret: the subscription's ``whsec_…`` secret.
        msg_id: the event id (``webhook-id``).
        timestamp: Unix seconds of the attempt (``webhook-timestamp``).
        body: the request body, byte for byte.
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()
