"""The dashboard's session cookie is ``Secure`` when the browser used https, as the proxies the
operator lists (TRAINFORGE_API_TRUSTED_PROXIES) report it, and only then.

The API runs as in production (``python -m services.api``): before, uvicorn believed
``X-Forwarded-Proto`` from 127.0.0.1 alone, so behind an ingress controller (another address)
the cookie of an https sign-in was never Secure, and anyone could make uvicorn believe
another client address by listing more proxies than needed. Here the trusted proxy is
127.0.0.2 (a loopback address the test connects from); the test's own 127.0.0.1 is a client
whose headers count for nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx

from services.store import Database
from tests.security.support import api_env, serve_api

PROXY = "127.0.0.2"


def _sign_in(url: str, token: str, *, source: str, forwarded_proto: str) -> str:
    """The Set-Cookie header of a sign-in sent from ``source`` with X-Forwarded-Proto."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=30) as client:
        answer = client.post("/ui/login", data={"token": token, "next": "/ui/jobs"},
                             headers={"Origin": url, "X-Forwarded-Proto": forwarded_proto})
    assert answer.status_code == 303, answer.text
    return answer.headers["set-cookie"]


def _secure(set_cookie: str) -> bool:
    return "secure" in [part.strip().lower() for part in set_cookie.split(";")]


def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(
    tmp_path: Path, database_url: str, artifacts_dir: Path, db: Database,
    make_token: Callable[[str], str],
) -> None:
    token = make_token("vision")
    env = {**api_env(tmp_path, database_url, artifacts_dir),
           "TRAINFORGE_API_TRUSTED_PROXIES": json.dumps([f"{PROXY}/32"])}
    with serve_api(env, tmp_path / "api.log") as api:
        assert _secure(_sign_in(api.url, token, source=PROXY, forwarded_proto="https"))
        assert not _secure(_sign_in(api.url, token, source=PROXY, forwarded_proto="http"))
        # Not a trusted proxy: its header is ignored (uvicorn used to trust 127.0.0.1).
        assert not _secure(_sign_in(api.url, token, source="127.0.0.1",
                                    forwarded_proto="https"))

