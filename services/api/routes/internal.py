"""/internal/v1: what running jobs report (per-attempt job tokens, never users' tokens)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path

from services.api.auth import State, current_job_attempt
from services.api.routes._docs import problems
from services.api.schemas import EventAccepted
from services.store import jobs as repo
from trainforge.errors import InvalidRequest
from trainforge.events import JobEvent

router = APIRouter(prefix="/internal/v1/jobs", tags=["internal"])


def _reject_nul(value: Any, path: str = "") -> None:
    # PostgreSQL text cannot hold NUL bytes: refuse them here with a clear message.
    if isinstance(value, str) and "\x00" in value:
        raise InvalidRequest(f"{path or 'body'}: NUL characters are not allowed")
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, path)
            _reject_nul(item, f"{path}.{key}" if path else str(key))


@router.post(
    "/{id}/events",
    status_code=202,
    response_model=EventAccepted,
    responses=problems(401, 413, 422),
    summary="Report a job's progress, state or a message (job token)",
)
def post_event(
    job_id: Annotated[str, Path(alias="id")],
    event: Annotated[JobEvent, Body()],
    state: State,
    _attempt: Annotated[int, Depends(current_job_attempt)],
) -> EventAccepted:
    _reject_nul(event.model_dump())
    with state.db.transaction() as session:
        repo.apply_reported_event(session, job_id, event)
    return EventAccepted()
