"""The FastAPI application factory."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.api import errors, log_redaction, ui
from services.api.body_limit import BodyLimitMiddleware
from services.api.health import StoreProbe
from services.api.metrics import HttpMetricsMiddleware, registry_for
from services.api.routes import (
    datasets,
    downloads,
    health,
    internal,
    jobs,
    models,
    schedules,
    webhooks,
)
from services.api.schemas import FieldProblem, Problem
from services.api.settings import ApiSettings, get_settings
from services.api.state import AppState
from services.api.streams import StreamSlots
from services.store.migrate import upgrade

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"


def create_app(settings: ApiSettings | None = None, *,
               wake_dispatcher: Callable[[], None] | None = None) -> FastAPI:
    """Build the API.

    Args:
        settings: the API's settings; default :func:`get_settings` (the environment), which is
            what ``uvicorn --factory services.api.app:create_app`` (Dockerfile.api) uses.
        wake_dispatcher: a dispatcher in the same process to wake when a job is cancelled
            (``trainforge serve``), so the run stops at once rather than at its next loop.

    Returns:
        The app; migrations run when it starts (``settings.migrate_on_startup``).
    """
    settings = settings or get_settings()
    state = AppState.from_settings(settings, wake_dispatcher=wake_dispatcher)
    # Here, not in __main__: every way of serving the app (python -m services.api, trainforge
    # serve, uvicorn --factory) must keep download-link signatures out of the access log.
    log_redaction.install()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_startup:
            upgrade(state.db.engine)
        yield
        await state.db.aclose()  # this loop's async connections (PostgreSQL submissions)
        state.db.dispose()

    app = FastAPI(
        title="trainforge",
        version=API_VERSION,
        description="Batch fine-tuning of Ultralytics YOLO detectors as a service.",
        lifespan=lifespan,
    )
    app.state.trainforge = state
    app.state.metrics_registry = registry_for(state.db)
    app.state.store_probe = StoreProbe(state)
    app.state.stream_slots = StreamSlots(settings.stream_max_per_token)
    errors.install(app, pages=ui.ErrorPages())
    for router in (jobs.router, schedules.router, models.router, downloads.router,
                   datasets.router, webhooks.router, internal.router, health.router):
        app.include_router(router)
    ui.install(app)  # the dashboard at /ui/ (docs/dashboard.md)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        # FastAPI documents a 422 with its own error schema on every operation that has
        # parameters; ours are problem+json and declared where they can happen. Drop the rest.
        for operation in (op for path in schema["paths"].values() for op in path.values()):
            default_422 = operation["responses"].get("422", {})
            if "HTTPValidationError" in json.dumps(default_422):
                del operation["responses"]["422"]
        # Problem is only referenced from hand-written `responses=`: add it to the components.
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        for model in (FieldProblem, Problem):
            spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
            spec.pop("$defs", None)
            components[model.__name__] = spec
        app.openapi_schema = schema
    return app.openapi_schema
