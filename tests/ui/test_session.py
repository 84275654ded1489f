"""The session cookie and CSRF token on their own: what a forged, expired or foreign one does."""

from __future__ import annotations

from services.api.ui import session

KEY = session.session_key(b"test-secret-key-not-a-placeholder")
DIGEST = "ab" * 32


def test_a_cookie_reads_back_until_it_expires() -> None:
    value = session.issue(KEY, "0123456789abcdef", DIGEST, ttl_s=60, now=1000)
    found = session.read(KEY, value, now=1059)
    assert found is not None and (found.token_id, found.token_sha256) == ("0123456789abcdef",
                                                                           DIGEST)
    assert session.read(KEY, value, now=1061) is None


def test_a_cookie_of_another_key_or_altered_is_refused() -> None:
    value = session.issue(KEY, "0123456789abcdef", DIGEST, ttl_s=60, now=1000)
    other_key = session.session_key(b"another-secret")
    assert session.read(other_key, value, now=1000) is None
    assert session.read(KEY, value.replace("0123456789abcdef", "fedcba9876543210"),
                        now=1000) is None
    assert session.read(KEY, "v1.garbage", now=1000) is None
    assert session.read(KEY, "", now=1000) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    first = session.read(KEY, session.issue(KEY, "0123456789abcdef", DIGEST, 60, now=1000),
                         now=1000)
    second = session.read(KEY, session.issue(KEY, "0123456789abcdef", DIGEST, 60, now=1001),
                          now=1001)
    assert first is not None and second is not None
    token = session.csrf_token(KEY, first)
    assert session.csrf_valid(KEY, first, token)
    assert not session.csrf_valid(KEY, second, token)
    assert not session.csrf_valid(KEY, first, None)
    assert not session.csrf_valid(KEY, first, token[:-1])
