"""/healthz, /readyz, /metrics: anonymous, for probes and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.api import health, metrics
from services.api.auth import State
from services.api.errors import problem
from services.api.routes._docs import problems
from services.api.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problems(503),
    summary="Readiness: the database answers and the object store takes a write",
)
def readyz(request: Request, state: State) -> Readiness | JSONResponse:
    checks, ok = health.check(state, request.app.state.store_probe)
    if ok:
        return Readiness(checks=checks)
    failed = ", ".join(k for k, v in checks.items() if v != "ok")
    return problem(503, "not_ready", f"not ready: {failed} unavailable",
                   instance=request.url.path, checks=checks)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
    summary="Prometheus metrics",
)
def prometheus_metrics(request: Request) -> Response:
    body = metrics.render(request.app.state.metrics_registry)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
