"""Readiness checks: the database answers a query, the object store takes a write.

The object-store check writes, reads back and deletes a small object under a reserved key
(``<artifacts>/.readyz/<random>``): a HEAD alone passes on a store that is full, read-only or
whose directory was replaced by a file, and the API would then take submissions it cannot
store. The result is cached for :data:`STORE_PROBE_TTL_S` so that frequent probes (kubelet,
load balancers) cost one round trip every few seconds, not three per probe.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time

from services.api.state import AppState
from trainforge.errors import StorageError

log = logging.getLogger(__name__)

#: How long an object-store probe result (good or bad) is reused.
STORE_PROBE_TTL_S = 3.0
#: Where probes write, under the artifacts location (never a job's prefix).
PROBE_PREFIX = ".readyz/"


class StoreProbe:
    """The object store's write + read + delete probe, cached for ``ttl_s`` seconds.

    One instance per app (``app.state.store_probe``); thread-safe (sync routes run in a
    thread pool), and concurrent probes wait for the one in flight instead of piling up.
    """

    def __init__(self, state: AppState, ttl_s: float = STORE_PROBE_TTL_S) -> None:
        self.state = state
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._result: tuple[str, float] | None = None

    def check(self) -> str:
        """``"ok"``, or ``"error: <code>"`` (the cause is logged)."""
        with self._lock:
            if self._result is not None and self._result[1] > time.monotonic():
                return self._result[0]
            outcome = self._probe()
            self._result = (outcome, time.monotonic() + self.ttl_s)
            return outcome

    def _probe(self) -> str:
        store = self.state.artifacts
        key = self.state.key(PROBE_PREFIX + secrets.token_hex(8))
        payload = secrets.token_bytes(16)
        step = "write"
        try:
            store.put(key, payload, content_type="application/octet-stream")
            step = "read"
            read_back = store.get(key)
            step = "delete"
            store.delete(key)
        except StorageError as exc:
            log.warning("readiness: object store %s probe failed: %s", step, exc.message)
            return f"error: {exc.code}"
        except Exception as exc:  # an unexpected failure is "not ready" too, never a 500
            log.warning("readiness: object store %s probe failed: %r", step, exc)
            return f"error: {type(exc).__name__}"
        if read_back != payload:
            log.warning("readiness: object store returned other bytes than were written")
            return "error: storage_error"
        return "ok"


def check(state: AppState, probe: StoreProbe | None = None) -> tuple[dict[str, str], bool]:
    """Run the readiness checks.

    Args:
        state: the app's state.
        probe: the app's cached object-store probe; default a fresh one (no caching).

    Returns:
        ({"database": "ok"|"error: …", "object_store": "ok"|"error: <code>"}, all ok).
    """
    checks: dict[str, str] = {}
    try:
        state.db.ping()
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready", with its text for humans
        log.warning("readiness: database check failed: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    checks["object_store"] = (probe or StoreProbe(state)).check()
    return checks, all(v == "ok" for v in checks.values())
