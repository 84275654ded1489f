"""The jobs list, a job's page, its live event stream, log tail and files; cancel."""

from __future__ import annotations

from typing import Annotated, TypeVar
from urllib.parse import quote

from anyio import to_thread
from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from services.api import artifacts, streams
from services.api import jobs as service
from services.api.auth import State
from services.api.ui import job_view
from services.api.ui.auth import CheckedForm, CurrentViewer
from services.api.ui.rendering import PREFIX, fragment, page
from trainforge.errors import InvalidRequest
from trainforge.spec import JobKind
from trainforge.states import JobState

router = APIRouter(prefix=f"{PREFIX}/jobs", include_in_schema=False)

JobId = Annotated[str, Path(max_length=64)]
PAGE_SIZE = 25
_Choice = TypeVar("_Choice", JobState, JobKind)


def _choice(kind: type[_Choice], value: str, field: str) -> _Choice | None:
    """A filter from a form: an empty select means "any"."""
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be one of {', '.join(kind)}; got {value!r}") \
            from None


@router.get("", response_class=HTMLResponse)
def jobs(
    request: Request, state: State, viewer: CurrentViewer,
    job_state: Annotated[str, Query(alias="state", max_length=16)] = "",
    kind: Annotated[str, Query(max_length=16)] = "",
    name: Annotated[str, Query(max_length=63)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    chosen_state = _choice(JobState, job_state, "state")
    listing = service.list_page(
        state, viewer.team, states=[chosen_state] if chosen_state else [],
        kind=_choice(JobKind, kind, "kind"), limit=PAGE_SIZE, cursor=cursor,
        name=name.strip() or None)
    best = service.best_scores(state, listing, job_view.MAP50_95)
    rows = [(job, job_view.duration_s(job), best.get(job.id)) for job in listing.items]
    filters = {"state": job_state, "kind": kind, "name": name}
    return page(request, "jobs.html", viewer=viewer, rows=rows, filters=filters,
                states=list(JobState), kinds=list(JobKind), next_cursor=listing.next_cursor,
                live=any(not job.state.terminal for job in listing.items))


@router.get("/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: JobId, state: State, viewer: CurrentViewer,
        param: Annotated[str | None, Query(max_length=64)] = None) -> HTMLResponse:
    view = job_view.job_page(state, viewer.team, job_id)
    return page(request, "job.html", viewer=viewer, view=view, curves=job_view.CURVES,
                duration=job_view.duration_s(view.job),
                scatter=job_view.sweep_scatter(view.trials, param))


@router.post("/{job_id}/cancel", response_class=RedirectResponse)
def cancel(job_id: JobId, state: State, viewer: CurrentViewer,
           _form: CheckedForm) -> RedirectResponse:
    service.cancel(state, viewer.team, job_id)
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)


@router.get("/{job_id}/events")
def events(
    request: Request, job_id: JobId, state: State, viewer: CurrentViewer,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=2**62)] = None,
) -> StreamingResponse:
    """The job's events as server-sent events: the JSON API's stream, under the session."""
    service.events_page(state, viewer.team, job_id, after=0, limit=1)  # 404 before any byte
    start = last_event_id if last_event_id is not None else after
    slot = request.app.state.stream_slots.acquire(viewer.session.token_sha256)
    return streams.SlotStreamingResponse(
        streams.event_stream(state, viewer.team, job_id, start), slot,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/{job_id}/log", response_class=HTMLResponse)
def log(job_id: JobId, state: State, viewer: CurrentViewer) -> HTMLResponse:
    """The log tail as a fragment; it polls itself again while the job can still write."""
    text, growing = job_view.log_tail(state, viewer.team, job_id)
    return fragment("_log.html", job_id=job_id, text=text, growing=growing)


@router.get("/{job_id}/files/{name:path}")
async def file(job_id: JobId, name: Annotated[str, Path(max_length=1024)], state: State,
               viewer: CurrentViewer) -> Response:
    """An artifact of the team's job. Images are shown inline; anything else downloads, so
    that an uploaded HTML file can never run as a page of this origin."""
    await to_thread.run_sync(service.get, state, viewer.team, job_id)  # 404: not the team's
    reader, size = await to_thread.run_sync(artifacts.open_artifact, state, job_id, name)
    media = job_view.image_type(name)
    filename = quote(name.rsplit("/", 1)[-1], safe="")
    headers = {"Content-Length": str(size), "Cache-Control": "private, max-age=300"}
    if media is None:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{filename}"
    return StreamingResponse(artifacts.iter_file(reader),
                             media_type=media or "application/octet-stream", headers=headers)
