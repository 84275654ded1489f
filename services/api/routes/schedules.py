"""/v1/schedules: scheduled retraining (create, list, get, change, fire now, delete, runs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from services.api import schedules as service
from services.api.auth import State, Team
from services.api.routes._docs import problems
from services.api.schemas import (
    ScheduleCreate,
    ScheduleDetail,
    ScheduleListQuery,
    ScheduleOut,
    SchedulePage,
    ScheduleRunPage,
    ScheduleUpdate,
)

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

ScheduleId = Annotated[str, Path(alias="id", description="schedule id (s…)")]


@router.post(
    "",
    status_code=201,
    response_model=ScheduleOut,
    responses=problems(400, 401, 403, 413, 422, 503),
    summary="Create a schedule: re-submit a job template on a cron schedule",
)
def create_schedule(
    body: ScheduleCreate, response: Response, state: State, team: Team
) -> ScheduleOut:
    schedule = service.create(state, team, body)
    response.headers["Location"] = f"/v1/schedules/{schedule.id}"
    return schedule


@router.get("", response_model=SchedulePage, responses=problems(401, 422),
            summary="List schedules")
def list_schedules(
    state: State, team: Team, query: Annotated[ScheduleListQuery, Query()]
) -> SchedulePage:
    return service.list_page(state, team, limit=query.limit, cursor=query.cursor)


@router.get("/{id}", response_model=ScheduleDetail, responses=problems(401, 404),
            summary="Get a schedule with its next fire time and latest runs")
def get_schedule(schedule_id: ScheduleId, state: State, team: Team) -> ScheduleDetail:
    return service.get(state, team, schedule_id)


@router.patch(
    "/{id}",
    response_model=ScheduleOut,
    responses=problems(400, 401, 403, 404, 413, 422),
    summary="Change a schedule: pause or resume it, or its cron, time zone or template",
)
def update_schedule(
    schedule_id: ScheduleId, body: ScheduleUpdate, state: State, team: Team
) -> ScheduleOut:
    return service.update(state, team, schedule_id, body)


@router.delete("/{id}", status_code=204, response_class=Response,
               responses=problems(401, 404),
               summary="Delete a schedule and its runs (the jobs it submitted stay)")
def delete_schedule(schedule_id: ScheduleId, state: State, team: Team) -> Response:
    service.delete(state, team, schedule_id)
    return Response(status_code=204)


@router.post(
    "/{id}/run",
    status_code=202,
    response_model=ScheduleOut,
    responses=problems(401, 404, 409),
    summary="Fire a schedule now (on the dispatcher's next loop, dataset check included)",
)
def run_schedule(schedule_id: ScheduleId, state: State, team: Team) -> ScheduleOut:
    return service.fire_now(state, team, schedule_id)


@router.get(
    "/{id}/runs",
    response_model=ScheduleRunPage,
    responses=problems(401, 404, 422),
    summary="A schedule's runs, newest first: submitted, skipped (and why) or failed",
)
def schedule_runs(
    schedule_id: ScheduleId, state: State, team: Team,
    query: Annotated[ScheduleListQuery, Query()],
) -> ScheduleRunPage:
    return service.runs_page(state, team, schedule_id, limit=query.limit, cursor=query.cursor)
