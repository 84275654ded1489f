"""The web dashboard at /ui/: server-rendered pages over the API's own use cases.

Jinja2 templates, htmx and uPlot (vendored under static/vendor/), server-sent events for a
running job. Signed in with a team token through a signed session cookie (session.py);
every state-changing form carries a CSRF token and must come from this origin (auth.py).
Nothing here is part of the OpenAPI schema.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.api.ui import (
    dataset_routes,
    job_routes,
    model_routes,
    schedule_routes,
    session_routes,
)
from services.api.ui.rendering import PREFIX, STATIC_DIR, ErrorPages, SecurityHeaders

__all__ = ["ErrorPages", "install"]


def install(app: FastAPI) -> None:
    """Add the dashboard's routes (and ``GET /``, which redirects to it), its static files and
    its response headers to ``app`` (the error pages are passed to services/api/errors.py's
    install by the factory)."""
    for router in (session_routes.root_router, session_routes.router, job_routes.router,
                   model_routes.router, schedule_routes.router, dataset_routes.router):
        app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app.add_middleware(SecurityHeaders)
