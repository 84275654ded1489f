"""The web dashboard at /ui/: server-rendered pages over the API's own use cases.

Jinja2 templates, htmx and uPlot (vendored under static/vendor/), server-sent events for a
running job. Signed in with a team token through a signed session cookie (session.py);
every state-changing form carries a CSRF token and must come from this origin (auth.py).
Nothing here is part of the OpenAPI schema.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.api.state import AppState
from services.api.ui.rendering import PREFIX, STATIC_DIR, ErrorPages, SecurityHeaders
from services.api.ui.routes import datasets, jobs, models, schedules, sessions
from services.api.ui.session_revocations import RevokedSessions

__all__ = ["ErrorPages", "install"]


def install(app: FastAPI) -> None:
    """Add the dashboard's routes (and ``GET /``, which redirects to it), its static files and
    its response headers to ``app`` (the error pages are passed to services/api/errors.py's
    install by the factory).

    Needs ``app.state.trainforge`` (the app's :class:`AppState`): the signed-out sessions are
    kept in its artifacts store.
    """
    state: AppState = app.state.trainforge
    app.state.ui_sessions = RevokedSessions(
        state.artifacts, state.artifacts_prefix, recheck_s=state.settings.token_cache_s,
        ttl_s=state.settings.ui_session_ttl_s)
    for router in (sessions.root_router, sessions.router, jobs.router, models.router,
                   schedules.router, datasets.router):
        app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_middleware(SecurityHeaders)
