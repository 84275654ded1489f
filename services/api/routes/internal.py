"""/internal/v1: what running jobs report (per-attempt job tokens, never users' tokens)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path

from services.api.auth import State, current_job_attempt
from services.api.metrics import MODEL_PROMOTIONS, PROMOTION_OUTCOMES
from services.api.routes._docs import problems
from services.api.schemas import EventAccepted
from services.store import events
from services.store import jobs as repo
from trainforge.errors import InvalidRequest
from trainforge.events import JobEvent, MessageEvent, ProgressEvent, StateEvent
from trainforge.text import for_event

router = APIRouter(prefix="/internal/v1/jobs", tags=["internal"])


_INT32 = 2**31 - 1


def _check_storable(value: Any, path: str = "body") -> None:
    """Refuse what the job store cannot hold, with the field's path (422, not a 500).

    PostgreSQL text cannot contain NUL, JSON has no NaN/Infinity, and epochs and attempts are
    32-bit columns.
    """
    if isinstance(value, str) and "\x00" in value:
        raise InvalidRequest(f"{path}: NUL characters are not allowed")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"{path}: must be a finite number")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63 - 1:
        raise InvalidRequest(f"{path}: integer out of range")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_storable(key, path)
            _check_storable(item, f"{path}.{key}")


def _visible(event: JobEvent) -> JobEvent:
    """The event with what it relays (reasons and messages quoting the team's file names,
    exceptions, output) made safe to show: trainforge/text.py ``for_event``."""
    if isinstance(event, StateEvent):
        return event.model_copy(update={"reason": for_event(event.reason)})
    if isinstance(event, MessageEvent):
        data = {k: for_event(v) if isinstance(v, str) else v for k, v in event.data.items()}
        return event.model_copy(update={"message": for_event(event.message), "data": data})
    return event


@router.post(
    "/{id}/events",
    status_code=202,
    response_model=EventAccepted,
    responses=problems(400, 401, 413, 422),
    summary="Report a job's progress, state or a message (job token)",
)
def post_event(
    job_id: Annotated[str, Path(alias="id")],
    event: Annotated[JobEvent, Body()],
    state: State,
    _attempt: Annotated[int, Depends(current_job_attempt)],
) -> EventAccepted:
    _check_storable(event.model_dump())
    event = _visible(event)
    if isinstance(event, ProgressEvent) and max(event.epoch, event.epochs, event.attempt) > _INT32:
        raise InvalidRequest("epoch, epochs and attempt must be below 2**31")
    with state.db.transaction() as session:
        events.apply_reported_event(session, job_id, event, attempt=_attempt)
        if isinstance(event, MessageEvent) and event.data.get("promotion") in PROMOTION_OUTCOMES:
            # Labelled by the job's own model name, never by what the event says.
            name = repo.get_job(session, job_id, team=None).name
            MODEL_PROMOTIONS.labels(model=name, outcome=str(event.data["promotion"])).inc()
    return EventAccepted()
