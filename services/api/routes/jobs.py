"""/v1/jobs: submit, list, get, cancel, resume, events, logs, artifacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from services.api import artifacts, streams
from services.api import jobs as service
from services.api.auth import State, Team, token_digest
from services.api.routes._docs import problems
from services.api.schemas import (
    ArtifactList,
    EventPage,
    EventQuery,
    JobListQuery,
    JobOut,
    JobPage,
    JobResume,
    JobSubmission,
    LogQuery,
)
from services.api.state import AppState

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

JobId = Annotated[str, Path(alias="id", description="job id (j…)")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Retry-safe submission: the same key and body return the first job; "
        "the same key with another body is refused (422).",
    ),
]


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses=problems(400, 401, 403, 413, 422, 429, 503),
    summary="Submit a job",
)
async def submit(
    body: JobSubmission,
    response: Response,
    state: State,
    team: Team,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    # Async (services/api/jobs.py submit_async): on PostgreSQL the submission is one statement
    # on the event loop's own connection pool, no thread hop.
    return _created(await service.submit_async(state, team, body, idempotency_key))


def _created(result: service.Submitted) -> JSONResponse:
    headers = {"Location": f"/v1/jobs/{result.body['id']}"}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(result.body, status_code=result.status_code, headers=headers)


@router.get("", response_model=JobPage, responses=problems(401, 422), summary="List jobs")
def list_jobs(state: State, team: Team, query: Annotated[JobListQuery, Query()]) -> JobPage:
    return service.list_page(
        state, team, states=query.state, kind=query.kind, limit=query.limit, cursor=query.cursor
    )


@router.get("/{id}", response_model=JobOut, responses=problems(401, 404), summary="Get a job")
def get_job(job_id: JobId, state: State, team: Team) -> JobOut:
    return service.get(state, team, job_id)


@router.post(
    "/{id}/cancel",
    response_model=JobOut,
    responses=problems(401, 404, 409),
    summary="Cancel a job (queued: at once; launched: through CANCELLING)",
)
def cancel_job(job_id: JobId, state: State, team: Team) -> JobOut:
    return service.cancel(state, team, job_id)


@router.post(
    "/{id}/resume",
    status_code=201,
    response_model=JobOut,
    responses=problems(400, 401, 403, 404, 409, 413, 422, 429, 503),
    summary="Resume a cancelled or failed training job: a new job that continues its last "
    "checkpoint (optionally to more epochs)",
)
def resume_job(
    job_id: JobId,
    state: State,
    team: Team,
    body: Annotated[JobResume | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    return _created(service.resume(state, team, job_id, body or JobResume(), idempotency_key))


@router.get(
    "/{id}/events",
    response_model=EventPage,
    responses={
        200: {
            "description": "The events as JSON, or as a server-sent event stream when the "
            "request accepts text/event-stream (ends when the job is done).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(401, 404, 422, 429),
    },
    summary="A job's events (JSON page, or server-sent events)",
)
def job_events(
    request: Request,
    job_id: JobId,
    state: State,
    team: Team,
    query: Annotated[EventQuery, Query()],
    last_event_id: Annotated[
        int | None, Header(alias="Last-Event-ID", ge=0, le=2**62, include_in_schema=False)
    ] = None,
) -> EventPage | StreamingResponse:
    page = service.events_page(state, team, job_id, after=query.after, limit=query.limit)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return page
    start = last_event_id if last_event_id is not None else query.after
    slot = request.app.state.stream_slots.acquire(token_digest(request))
    return streams.SlotStreamingResponse(
        streams.event_stream(state, team, job_id, start),
        slot,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{id}/logs",
    response_class=PlainTextResponse,
    responses={
        200: {"description": "The attempt's log (streamed as it grows with follow=true)"},
        **problems(401, 404, 422, 429, 503),
    },
    summary="A job's log (the latest attempt unless `attempt` is given)",
)
def job_logs(
    request: Request,
    job_id: JobId,
    state: State,
    team: Team,
    query: Annotated[LogQuery, Query()],
) -> Response:
    target = streams.log_target(state, team, job_id, query.attempt)
    if not query.follow:
        return PlainTextResponse(streams.read_log(state, target))
    slot = request.app.state.stream_slots.acquire(token_digest(request))
    try:
        # Read before any byte is sent: a failing store is a 503 here, not a 200 that breaks.
        first = streams.read_log(state, target)
    except BaseException:
        slot.release()
        raise
    return streams.SlotStreamingResponse(
        streams.follow_log(state, team, job_id, query.attempt, target, first),
        slot,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{id}/artifacts",
    response_model=ArtifactList,
    responses=problems(401, 404, 503),
    summary="A job's artifacts with size, sha256 and a download URL (valid ≤ 15 min)",
)
def job_artifacts(request: Request, job_id: JobId, state: State, team: Team) -> ArtifactList:
    return artifacts.list_artifacts(state, team, job_id, str(request.base_url))


__all__ = ["AppState", "router"]
