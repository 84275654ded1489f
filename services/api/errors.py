"""The one mapping from domain errors to HTTP statuses, and problem+json responses (RFC 9457).

Routes never build HTTP errors: they let trainforge errors propagate, and the handlers here
turn them into ``application/problem+json`` using :data:`ERROR_STATUS`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from trainforge.aliases import AliasConflict
from trainforge.errors import (
    AccessDenied,
    BackendError,
    CsrfRejected,
    DatasetError,
    DownloadLinkInvalid,
    IdempotencyKeyReused,
    InvalidRequest,
    JobNotFound,
    JobStateConflict,
    LimitExceeded,
    NotFound,
    NotReady,
    ObjectNotFound,
    PayloadTooLarge,
    QuotaExceeded,
    ScheduleStateConflict,
    SpecError,
    StorageError,
    TrainforgeError,
    Unauthenticated,
    WeightsError,
)
from trainforge.registry import ModelNotFound, RegistryError
from trainforge.spec import parse_spec

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

#: Domain error → HTTP status. A subclass maps like its nearest listed ancestor.
ERROR_STATUS: Mapping[type[TrainforgeError], int] = {
    Unauthenticated: 401,
    AccessDenied: 403,
    CsrfRejected: 403,
    DownloadLinkInvalid: 403,
    LimitExceeded: 403,
    JobNotFound: 404,
    NotFound: 404,
    ObjectNotFound: 404,
    JobStateConflict: 409,
    ScheduleStateConflict: 409,
    AliasConflict: 409,
    PayloadTooLarge: 413,
    SpecError: 422,
    IdempotencyKeyReused: 422,
    InvalidRequest: 422,
    DatasetError: 422,
    WeightsError: 422,
    ModelNotFound: 422,
    RegistryError: 422,
    QuotaExceeded: 429,
    StorageError: 503,
    NotReady: 503,
    BackendError: 503,
}

#: Codes for errors the framework raises (unknown route, wrong method, …).
_HTTP_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed",
               406: "not_acceptable", 413: "payload_too_large", 415: "unsupported_media_type"}


def status_for(exc: TrainforgeError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": f"urn:trainforge:problem:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_response(exc: TrainforgeError, instance: str | None = None) -> JSONResponse:
    """The problem+json response for a domain error (used by handlers and middleware)."""
    status, detail, headers = _described(exc, instance)
    return problem(status, exc.code, detail, instance=instance, headers=headers)


def _described(exc: TrainforgeError, instance: str | None) -> tuple[int, str, dict[str, str]]:
    """A domain error's status, the detail a client may read, and its headers."""
    status = status_for(exc)
    detail = exc.message
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="trainforge"'
    if status == 429:
        headers["Retry-After"] = str(getattr(exc, "retry_after_s", 30))
    if status == 500:
        log.error("unmapped domain error %s: %s", exc.code, exc.message)
    if status == 503 and isinstance(exc, StorageError):
        # The message names internal locations (bucket, endpoint, paths on the server): the
        # operator reads it in the log; the client learns only that the store is down.
        log.warning("object store unavailable on %s (%s): %s", instance, exc.code, exc.message)
        detail = "the object store is unavailable; retry later (the server logged the cause)"
    return status, detail, headers


class ErrorPages(Protocol):
    """Renders the errors of the routes under ``prefix`` for people instead of programs (the
    dashboard's HTML pages): same statuses and details, another body."""

    prefix: str

    def __call__(self, request: Request, exc: Exception, status: int, code: str,
                 detail: str) -> Response: ...


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    spec_failed = False
    for item in exc.errors():
        loc = [str(p) for p in item.get("loc", ())]
        if loc[:1] == ["body"]:
            loc = loc[1:]
        if loc[:1] == ["spec"] and len(loc) > 1:
            spec_failed = True
            continue
        message = str(item.get("msg", "invalid"))
        if item.get("type") == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}; a client may not set it"
        errors.append({"path": ".".join(loc) or "<body>", "message": message})
    body = exc.body
    if spec_failed and isinstance(body, dict) and isinstance(body.get("spec"), dict):
        # Re-run the spec's own parser for its messages (allowed keys, what to change).
        try:
            parse_spec(body["spec"])
        except SpecError as spec_error:
            for line in spec_error.message.splitlines():
                path, _, message = line.partition(": ")
                errors.append({"path": f"spec.{path}", "message": message})
    return errors


def install(app: FastAPI, pages: ErrorPages | None = None) -> None:
    """Register the handlers on ``app``; errors under ``pages.prefix`` are rendered by it."""

    def _page(request: Request) -> ErrorPages | None:
        return pages if pages is not None and request.url.path.startswith(pages.prefix) \
            else None

    @app.exception_handler(TrainforgeError)
    async def _domain(request: Request, exc: TrainforgeError) -> Response:
        if (render := _page(request)) is not None:
            status, detail, _ = _described(exc, request.url.path)
            return render(request, exc, status, exc.code, detail)
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            # Not parseable at all (400), as opposed to parsed but invalid (422).
            return problem(400, "malformed_body", "the request body is not valid JSON",
                           instance=request.url.path)
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        detail = detail or "the request does not validate"
        if (render := _page(request)) is not None:
            return render(request, exc, 422, "validation_failed", detail)
        return problem(422, "validation_failed", detail, instance=request.url.path,
                       errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if (render := _page(request)) is not None:
            return render(request, exc, exc.status_code, code, detail)
        return problem(exc.status_code, code, detail, instance=request.url.path,
                       headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "internal error; the server logged the details",
                       instance=request.url.path)
