"""Readiness checks: the database answers a query, the object store answers a HEAD."""

from __future__ import annotations

import logging

from services.api.state import AppState
from trainforge.errors import StorageError

log = logging.getLogger(__name__)


def check(state: AppState) -> tuple[dict[str, str], bool]:
    """Returns ({"database": "ok"|error, "object_store": "ok"|error}, all ok)."""
    checks: dict[str, str] = {}
    try:
        state.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", with its text for humans
        log.warning("readiness: database check failed: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        # A HEAD of a key that need not exist: a missing bucket or bad credentials raise.
        state.artifacts.exists(state.key(".readyz"))
        checks["object_store"] = "ok"
    except StorageError as exc:
        log.warning("readiness: object store check failed: %s", exc)
        checks["object_store"] = f"error: {exc.code}"
    return checks, all(v == "ok" for v in checks.values())
