"""The team's schedules: next fire, recent runs and why they were skipped; pause, resume."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from services.api import schedules as service
from services.api.auth import State
from services.api.schemas import ScheduleUpdate
from services.api.ui.auth import CheckedForm, CurrentViewer
from services.api.ui.rendering import PREFIX, page

router = APIRouter(prefix=f"{PREFIX}/schedules", include_in_schema=False)

ScheduleId = Annotated[str, Path(max_length=64)]


@router.get("", response_class=HTMLResponse)
def schedules(request: Request, state: State, viewer: CurrentViewer,
              cursor: Annotated[str | None, Query(max_length=200)] = None) -> HTMLResponse:
    listing = service.list_page(state, viewer.team, limit=50, cursor=cursor)
    return page(request, "schedules.html", viewer=viewer, schedules=listing.items,
                next_cursor=listing.next_cursor)


@router.get("/{schedule_id}", response_class=HTMLResponse)
def schedule(request: Request, schedule_id: ScheduleId, state: State,
             viewer: CurrentViewer) -> HTMLResponse:
    return page(request, "schedule.html", viewer=viewer,
                schedule=service.get(state, viewer.team, schedule_id))


def _set_paused(state: State, team: str, schedule_id: str, paused: bool) -> RedirectResponse:
    service.update(state, team, schedule_id, ScheduleUpdate(paused=paused))
    return RedirectResponse(f"{PREFIX}/schedules/{schedule_id}", status_code=303)


@router.post("/{schedule_id}/pause", response_class=RedirectResponse)
def pause(schedule_id: ScheduleId, state: State, viewer: CurrentViewer,
          _form: CheckedForm) -> RedirectResponse:
    return _set_paused(state, viewer.team, schedule_id, True)


@router.post("/{schedule_id}/resume", response_class=RedirectResponse)
def resume(schedule_id: ScheduleId, state: State, viewer: CurrentViewer,
           _form: CheckedForm) -> RedirectResponse:
    return _set_paused(state, viewer.team, schedule_id, False)
