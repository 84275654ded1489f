"""Templates, the headers every dashboard response carries, and its error pages."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trainforge.text import for_page

PREFIX = "/ui"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

#: Nothing but this server: no inline script or style, no other origin, no framing. Data for
#: the scripts travels in data- attributes and <script type="application/json"> blocks.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def _number(value: Any, digits: int = 3) -> str:
    """Fixed decimals, or an en dash for a missing or non-finite score."""
    if value is None or isinstance(value, bool):
        return "–"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{number:.{digits}f}" if math.isfinite(number) else "–"


def _size(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"  # unreachable: the loop returns at GiB


def _iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _shown(value: Any) -> Any:
    """Every ``{{ … }}`` value: text with bidirectional controls and line separators made
    visible (a job's reasons and log quote file names of the team's dataset), then escaped."""
    return for_page(value) if isinstance(value, str) and not isinstance(value, Markup) \
        else value


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template; user data (job, class names, URIs, logs) is untrusted
    finalize=_shown,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(number=_number, size=_size, iso=_iso, duration=_duration,
                    urlpart=lambda value: quote(str(value), safe=""),
                    urlpath=lambda value: quote(str(value), safe="/"))


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a template; pages are never cached (they hold CSRF tokens and team data)."""
    html = _env.get_template(template).render(request=request, prefix=PREFIX, **context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


def fragment(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a partial (htmx swaps it into a page)."""
    html = _env.get_template(template).render(prefix=PREFIX, **context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


class ErrorPages:
    """services/api/errors.py's renderer for /ui: the API's statuses and messages as pages;
    a missing or dead session goes to the sign-in page instead."""

    prefix = PREFIX

    def __call__(self, request: Request, exc: Exception, status: int, code: str,
                 detail: str) -> Response:
        if status == 401:
            target = request.url.path
            if request.url.query:
                target += "?" + request.url.query
            back = quote(target, safe="") if request.method == "GET" else ""
            return RedirectResponse(f"{PREFIX}/login" + (f"?next={back}" if back else ""),
                                    status_code=303)
        return page(request, "error.html", status_code=status, status=status, code=code,
                    detail=detail, viewer=None)


class SecurityHeaders:
    """Adds the CSP and its companions to every response under /ui (pages, static files,
    streams, errors); other paths pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)
