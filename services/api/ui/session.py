"""The dashboard's session cookie and its CSRF token, both HMACs under the server's secret.

The cookie never holds the bearer token: it holds a random session id, the token's id, the
SHA-256 of the whole token (the key the API's token cache and stream slots use) and an expiry,
signed with a key derived from ``TRAINFORGE_SECRET_KEY``. Every request looks the token id up
again (through the token cache), so revoking the token ends its sessions, and checks that the
session was not signed out (session_revocations.py), so logging out ends that one session on
the server, not only in the browser. The CSRF token is an HMAC of the cookie's value: it needs
no server-side storage and changes with every login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE_NAME = "tf_ui_session"
COOKIE_PATH = "/ui"
#: v2 added the session id (v1 cookies, without one, are refused: sign in again once).
_VERSION = "v2"


@dataclass(frozen=True)
class Session:
    """What a valid cookie says: which session of whose token, and until when."""

    session_id: str
    token_id: str
    token_sha256: str
    expires: int
    value: str  # the cookie as sent, which the CSRF token is derived from


def session_key(secret_key: bytes) -> bytes:
    """The dashboard's own HMAC key: a session cookie is never a valid download signature or
    job token, even though all three derive from the one secret."""
    return hmac.new(secret_key, b"trainforge-ui-session", hashlib.sha256).digest()


def _mac(key: bytes, message: str) -> str:
    digest = hmac.new(key, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def issue(key: bytes, token_id: str, token_sha256: str, ttl_s: int,
          now: float | None = None) -> str:
    """A signed cookie value for a token that was just verified: a new session."""
    expires = int(now if now is not None else time.time()) + ttl_s
    session_id = secrets.token_urlsafe(16)  # no '.': base64url
    body = f"{_VERSION}.{session_id}.{token_id}.{token_sha256}.{expires}"
    return f"{body}.{_mac(key, body)}"


def read(key: bytes, value: str, now: float | None = None) -> Session | None:
    """The session a cookie value holds; None if it is malformed, forged or expired."""
    parts = value.split(".")
    if len(parts) != 6 or parts[0] != _VERSION or not parts[4].isdigit():
        return None
    body, mac = ".".join(parts[:5]), parts[5]
    if not hmac.compare_digest(_mac(key, body).encode(), mac.encode()):
        return None
    expires = int(parts[4])
    if expires < (now if now is not None else time.time()):
        return None
    return Session(session_id=parts[1], token_id=parts[2], token_sha256=parts[3],
                   expires=expires, value=value)


def csrf_token(key: bytes, session: Session) -> str:
    """The token every state-changing form of this session must carry."""
    return _mac(key, f"csrf:{session.value}")


def csrf_valid(key: bytes, session: Session, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(
        csrf_token(key, session).encode(), presented.encode())
