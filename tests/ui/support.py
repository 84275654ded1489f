"""Helpers of the dashboard tests: sign in like a browser, read a page's forms and links."""

from __future__ import annotations

from html.parser import HTMLParser

from fastapi.testclient import TestClient

#: The TestClient's origin: forms the dashboard accepts come from its own host.
ORIGIN = "http://testserver"


def sign_in(client: TestClient, token: str) -> None:
    """POST the login form; the client keeps the session cookie."""
    response = client.post("/ui/login", data={"token": token, "next": "/ui/jobs"},
                           headers={"Origin": ORIGIN}, follow_redirects=False)
    assert response.status_code == 303, response.text


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.csrf: list[str] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "action", "hx-get", "hx-post"):
            if found.get(name):
                self.urls.append(str(found[name]))
        if tag == "input" and found.get("name") == "csrf":
            self.csrf.append(str(found.get("value")))
        if tag == "script":
            self.scripts.append(found)


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def csrf_of(client: TestClient, path: str) -> str:
    """The CSRF token the page at ``path`` puts in its forms."""
    tokens = parse(client.get(path).text).csrf
    assert tokens, f"no form with a CSRF token on {path}"
    return tokens[0]
