"""Sign in with a team token, sign out."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.api.auth import State
from services.api.ui import session
from services.api.ui.auth import (
    CheckedForm,
    CurrentViewer,
    check_origin,
    form_fields,
    key_of,
    signed_out_sessions,
)
from services.api.ui.rendering import PREFIX, page
from services.store import tokens
from services.store.domain import ApiToken
from trainforge.errors import Unauthenticated

router = APIRouter(prefix=PREFIX, include_in_schema=False)
#: The server's own root: a person who opens the bare URL lands on the dashboard.
root_router = APIRouter(include_in_schema=False)

HOME = f"{PREFIX}/jobs"


def _safe_next(target: str | None) -> str:
    """Only a path of the dashboard itself: never an open redirect to another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return HOME


@router.get("", response_class=RedirectResponse)
@router.get("/", response_class=RedirectResponse)
def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@root_router.get("/", response_class=RedirectResponse)
def server_root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/", status_code=307)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request,
               next_page: Annotated[str | None, Query(alias="next", max_length=2000)] = None
               ) -> HTMLResponse:
    return page(request, "login.html", next_page=_safe_next(next_page), error=None,
                viewer=None)


def _verify(state: State, token: str) -> ApiToken:
    with state.db.transaction() as db_session:
        return tokens.authenticate(db_session, token)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, state: State) -> Response:
    """Check the token as the API checks a bearer token, then keep only a signed session."""
    check_origin(request)
    fields = await form_fields(request)
    token = fields.get("token", "").strip()
    next_page = _safe_next(fields.get("next"))
    try:
        found = await to_thread.run_sync(_verify, state, token)
    except Unauthenticated:
        return page(request, "login.html", status_code=401, next_page=next_page, viewer=None,
                    error="That token is unknown, malformed or revoked. Create one with "
                          "`trainforge tokens create --team TEAM`.")
    digest = tokens.sha256_hex(token)
    state.token_cache.put(digest, found.team)
    ttl = state.settings.ui_session_ttl_s
    response = RedirectResponse(next_page, status_code=303)
    response.set_cookie(
        session.COOKIE_NAME, session.issue(key_of(state), found.id, digest, ttl),
        max_age=ttl, path=session.COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout", response_class=RedirectResponse)
async def logout(request: Request, _form: CheckedForm, viewer: CurrentViewer) -> RedirectResponse:
    """End the session on the server (every replica refuses its cookie from now on), then in
    the browser."""
    await to_thread.run_sync(signed_out_sessions(request).revoke, viewer.session)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(session.COOKIE_NAME, path=session.COOKIE_PATH, httponly=True,
                           samesite="strict", secure=request.url.scheme == "https")
    return response
