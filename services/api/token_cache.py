"""A short-lived cache of verified API tokens (saves a database round trip per request)."""

from __future__ import annotations

import threading
import time


class TokenCache:
    """Teams of recently verified tokens, for ``ttl_s`` seconds (0 disables it).

    Saves a database round trip per request; the price is that a revoked token keeps working
    for at most ``ttl_s`` on replicas that verified it just before. Keyed by the token's
    SHA-256, so no plaintext token is kept in memory.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> str | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: str, team: str) -> None:
        if self.ttl_s <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # rare; simpler than an LRU and always correct
            self._entries[digest] = (team, time.monotonic() + self.ttl_s)
