"""Logging out of the dashboard ends the session on the server: a copy of the cookie taken
before the logout (a shared machine, a proxy log) lands on the sign-in page afterwards, on
every API replica, while a new sign-in works. Before, ``POST /ui/logout`` only asked the
browser to drop the cookie, and the copy kept opening ``/ui/jobs`` for 8 hours."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser

import httpx
from fastapi import FastAPI

from services.api import create_app
from services.api.settings import ApiSettings
from services.api.ui import session
from tests.fixtures.network import serve_app


class _CsrfField(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.values: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("name") == "csrf" and found.get("value"):
            self.values.append(str(found["value"]))


def _sign_in(url: str, token: str) -> httpx.Client:
    browser = httpx.Client(base_url=url, timeout=30, headers={"Origin": url})
    signed_in = browser.post("/ui/login", data={"token": token, "next": "/ui/jobs"})
    assert signed_in.status_code == 303, signed_in.text
    return browser


def _jobs_page(url: str, cookie: str) -> httpx.Response:
    """/ui/jobs as a browser holding only ``cookie`` would get it."""
    return httpx.get(f"{url}/ui/jobs", cookies={session.COOKIE_NAME: cookie}, timeout=30)


def test_an_old_cookie_after_logout_lands_on_the_login_page_on_every_replica(
    app: FastAPI, live_url: str, settings: ApiSettings, make_token: Callable[[str], str],
) -> None:
    token = make_token("vision")
    # A second replica: its own process state, the same job store and artifacts store.
    with serve_app(create_app(settings)) as replica:
        browser = _sign_in(live_url, token)
        copied = browser.cookies[session.COOKIE_NAME]
        for url in (live_url, replica):
            assert _jobs_page(url, copied).status_code == 200, url
        page = browser.get("/ui/jobs")
        form = _CsrfField()
        form.feed(page.text)
        logged_out = browser.post("/ui/logout", data={"csrf": form.values[0]})
        assert logged_out.status_code == 303
        assert logged_out.headers["location"] == "/ui/login"
        for url in (live_url, replica):
            answer = _jobs_page(url, copied)
            assert answer.status_code == 303, (url, answer.status_code)
            assert answer.headers["location"].startswith("/ui/login"), url
        again = _sign_in(replica, token)  # a new session is a new session
        assert again.get("/ui/jobs").status_code == 200
