"""Who is looking at the dashboard (its session cookie), and the CSRF checks of its forms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qs, urlsplit

from anyio import to_thread
from fastapi import Depends, Request

from services.api.state import AppState, get_state
from services.api.ui import session
from services.api.ui.session_revocations import RevokedSessions
from services.store import tokens
from trainforge.errors import CsrfRejected, SignInRequired, Unauthenticated


@dataclass(frozen=True)
class Viewer:
    """The signed-in team, and the CSRF token its forms carry."""

    team: str
    csrf: str
    session: session.Session


def key_of(state: AppState) -> bytes:
    return session.session_key(state.secret_key)


def signed_out_sessions(request: Request) -> RevokedSessions:
    """The app's record of signed-out sessions (set up by ``services.api.ui.install``)."""
    revoked: RevokedSessions = request.app.state.ui_sessions
    return revoked


def _live_team(state: AppState, token_id: str) -> str:
    with state.db.transaction() as db_session:
        return tokens.live_token(db_session, token_id).team


async def current_viewer(
    request: Request, state: Annotated[AppState, Depends(get_state)]
) -> Viewer:
    """The team of the request's session cookie, checked as a bearer token is: through the
    token cache, else the token store (a revoked token ends its sessions); a session signed out
    on any replica is refused too.

    Raises:
        SignInRequired: no valid session (the error page redirects to the sign-in page).
        StorageError: the record of signed-out sessions cannot be read (503, never trusted).
    """
    key = key_of(state)
    found = session.read(key, request.cookies.get(session.COOKIE_NAME, ""))
    if found is None:
        raise SignInRequired("sign in with a team token")
    revoked = signed_out_sessions(request)
    signed_out = revoked.remembered(found)
    if signed_out is None:
        signed_out = await to_thread.run_sync(revoked.is_revoked, found)
    if signed_out:
        raise SignInRequired("this session was signed out; sign in again")
    team = state.token_cache.get(found.token_sha256)
    if team is None:
        try:
            team = await to_thread.run_sync(_live_team, state, found.token_id)
        except Unauthenticated:
            raise SignInRequired("the token of this session was revoked; sign in again") \
                from None
        state.token_cache.put(found.token_sha256, team)
    # Streams opened from the dashboard count against the same token's slots as the API's.
    request.state.token_sha256 = found.token_sha256
    return Viewer(team=team, csrf=session.csrf_token(key, found), session=found)


def check_origin(request: Request) -> None:
    """Refuse a form posted from another site: browsers send Origin with every POST (Referer
    when a privacy setting strips it). Only the host is compared, so that a TLS-terminating
    proxy that forwards plain HTTP does not make every form fail.

    Raises:
        CsrfRejected: no Origin nor Referer, or one of another host.
    """
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent or sent == "null":
        raise CsrfRejected("this form must be sent by the dashboard's own page (the request "
                           "had no Origin header); reload the page and try again")
    if urlsplit(sent).netloc != request.headers.get("host", ""):
        raise CsrfRejected("this form was sent from another site; nothing was changed")


async def form_fields(request: Request) -> dict[str, str]:
    """The request's urlencoded form (one value a field; the body limit middleware bounds it).

    Parsed by hand: the dashboard's forms are tiny and this keeps python-multipart out.
    """
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def checked_form(
    request: Request, viewer: Annotated[Viewer, Depends(current_viewer)],
    state: Annotated[AppState, Depends(get_state)],
) -> dict[str, str]:
    """The form of a state-changing POST, after its origin and CSRF token were checked.

    Raises:
        CsrfRejected: another origin, or a missing or wrong ``csrf`` field.
    """
    check_origin(request)
    fields = await form_fields(request)
    if not session.csrf_valid(key_of(state), viewer.session, fields.get("csrf")):
        raise CsrfRejected("the form's CSRF token is missing or is not this session's; reload "
                           "the page and try again (nothing was changed)")
    return fields


CurrentViewer = Annotated[Viewer, Depends(current_viewer)]
CheckedForm = Annotated[dict[str, str], Depends(checked_form)]
