"""Public ids: a one-letter kind (``j`` job, ``s`` schedule, ``w`` webhook) + a lowercase ULID
(time-ordered, DNS-label safe, 27 characters)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        out.append(_ALPHABET[rem])
    return "".join(reversed(out))


def _new_id(kind: str) -> str:
    return kind + _b32(time.time_ns() // 1_000_000, 10) + _b32(secrets.randbits(80), 16)


def new_job_id() -> str:
    """A fresh job id: starts with a letter so it is a valid Kubernetes/RayJob name."""
    return _new_id("j")


def new_schedule_id() -> str:
    """A fresh schedule id (``s…``)."""
    return _new_id("s")


def new_webhook_id() -> str:
    """A fresh webhook subscription id (``w…``)."""
    return _new_id("w")
