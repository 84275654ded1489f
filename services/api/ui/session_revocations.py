"""Signed-out dashboard sessions, remembered on the server until their cookies expire.

A session cookie is valid by its signature alone (session.py), so deleting it in the browser
at logout ends nothing: a copy of the cookie (a shared machine, a proxy log, malware) kept
opening the dashboard for the rest of its 8 hours. Logging out therefore records the session
as revoked, and every request checks that record before the session counts.

The records live in the artifacts store, ``internal/ui-sessions/<session id>.json`` (never
listed as an artifact), because every API replica reads that store and the job store's
schema has no table for them. A replica remembers a revocation it has seen until the cookie
expires; that a session is *not* revoked it trusts for ``token_cache_s`` at most, the delay a
revoked API token has too (0: every request asks the store). A record is deleted once its
cookie could no longer be valid anyway.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from services.api.ui.session import Session
from trainforge.errors import StorageError
from trainforge.layout import ui_session_revocation_key, ui_session_revocations_prefix
from trainforge.storage import ObjectStore, join_key

log = logging.getLogger(__name__)

#: Sessions remembered per process (either answer); past it, the memory starts over.
_MAX_REMEMBERED = 10_000


class RevokedSessions:
    """Which dashboard sessions were signed out.

    Args:
        store: the artifacts store, and ``prefix`` the artifacts location's key prefix in it.
        recheck_s: how long a "not revoked" answer is trusted without asking the store.
        ttl_s: the longest a cookie is valid (``ui_session_ttl_s``): a record older than that
            is of an expired cookie.
    """

    def __init__(self, store: ObjectStore, prefix: str, *, recheck_s: float,
                 ttl_s: int) -> None:
        self._store = store
        self._prefix = prefix
        self._recheck_s = recheck_s
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._revoked: dict[str, int] = {}  # session id -> cookie expiry (epoch seconds)
        self._live_until: dict[str, float] = {}  # session id -> monotonic deadline

    def _key(self, session_id: str) -> str:
        return join_key(self._prefix, ui_session_revocation_key(session_id))

    def remembered(self, session: Session) -> bool | None:
        """What this process knows without asking the store: True (revoked), False (checked
        live recently) or None (ask :meth:`is_revoked`)."""
        with self._lock:
            if session.session_id in self._revoked:
                return True
            deadline = self._live_until.get(session.session_id)
        return False if deadline is not None and deadline > time.monotonic() else None

    def is_revoked(self, session: Session) -> bool:
        """Whether ``session`` was signed out (blocking: it may read the store).

        Raises:
            StorageError: the store cannot say (the request fails rather than trusting it).
        """
        known = self.remembered(session)
        if known is not None:
            return known
        revoked = self._store.exists(self._key(session.session_id))
        with self._lock:
            self._forget_if_full()
            if revoked:
                self._revoked[session.session_id] = session.expires
            elif self._recheck_s > 0:
                self._live_until[session.session_id] = time.monotonic() + self._recheck_s
        return revoked

    def revoke(self, session: Session) -> None:
        """End ``session`` for every replica (blocking: it writes the store).

        Raises:
            StorageError: the record could not be written (the logout reports it).
        """
        body = json.dumps({"expires": session.expires}).encode()  # for people reading the store
        self._store.put(self._key(session.session_id), body, content_type="application/json")
        with self._lock:
            self._forget_if_full()
            self._revoked[session.session_id] = session.expires
            self._live_until.pop(session.session_id, None)
        self._prune()

    def _forget_if_full(self) -> None:
        if len(self._revoked) + len(self._live_until) >= _MAX_REMEMBERED:
            now = time.time()
            self._revoked = {k: v for k, v in self._revoked.items() if v >= now}
            self._live_until.clear()

    def _prune(self) -> None:
        """Delete the records written longer ago than a cookie lives (best effort: a later
        logout prunes again, and nothing depends on it)."""
        oldest = time.time() - self._ttl_s
        prefix = join_key(self._prefix, ui_session_revocations_prefix())
        try:
            for info in self._store.list(prefix):
                if info.last_modified is not None and info.last_modified.timestamp() < oldest:
                    self._store.delete(info.key)
        except StorageError as exc:
            log.warning("could not prune signed-out dashboard sessions: %s", exc)
