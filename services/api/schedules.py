"""Schedule use cases behind the /v1/schedules routes: create, read, change, fire, delete.

The dispatcher fires schedules (services/dispatcher/scheduler.py); the API only stores them.
A schedule's spec is refused here as a submission of it would be: the same JobSpec contract,
the team's storage access policy, its per-job limits (GPUs, sweep trials) and, on the embedded
server, the local inputs its jobs would fail on (admission.check_job_inputs), so that its runs
are never refused for what was already known at creation (each fire checks again: the policy
or the files may have changed since).
"""

from __future__ import annotations

import logging

from services.api.jobs import decode_cursor, encode_cursor
from services.api.schemas import (
    ScheduleCreate,
    ScheduleDetail,
    ScheduleOut,
    SchedulePage,
    ScheduleRunOut,
    ScheduleRunPage,
    ScheduleUpdate,
)
from services.api.state import AppState
from services.store import schedules as repo
from services.store.admission import (
    check_job_access,
    check_job_inputs,
    check_job_limits,
    check_model_ref,
)
from services.store.domain import NewSchedule
from services.store.ids import new_schedule_id
from trainforge.spec import JobSpec

log = logging.getLogger(__name__)

#: Runs shown in a schedule's detail (all of them: GET /v1/schedules/{id}/runs).
RECENT_RUNS = 10


def _check_template(state: AppState, team: str, spec: JobSpec) -> None:
    """What a submission of ``spec`` checks before the job exists (services/store/admission.py).

    Raises:
        AccessDenied, LocationInvalid: the spec names a location the team may not read.
        ModelNotFound: a registry:// base the team has not published.
        LimitExceeded: the spec asks for more GPUs or trials than the team may use.
        DatasetError, WeightsError: on the embedded server, local inputs its jobs could not
            open.
    """
    check_job_access(spec, state.access_for(team))
    check_model_ref(spec, state.settings.team_models_uri(team))
    check_job_limits(spec, team, state.settings.limits_for(team))
    check_job_inputs(spec, state.machine)


def create(state: AppState, team: str, body: ScheduleCreate) -> ScheduleOut:
    """Store a schedule; it first fires at its first cron time after now.

    Raises:
        AccessDenied, LocationInvalid, ModelNotFound, LimitExceeded, DatasetError,
        WeightsError: see :func:`_check_template`.
        LimitExceeded: also when the team already has ``max_schedules`` schedules.
    """
    _check_template(state, team, body.spec)
    limits = state.settings.limits_for(team)
    new = NewSchedule(
        id=new_schedule_id(),
        team=team,
        name=body.name or body.spec.name,
        cron=body.cron,
        timezone=body.timezone,
        spec=body.spec.model_dump(mode="json"),
        only_if_dataset_changed=body.only_if_dataset_changed,
        paused=body.paused,
    )
    with state.db.transaction() as session:
        schedule = repo.insert_schedule(session, new, max_schedules=limits.max_schedules)
    log.info("schedule %s created by team %s (%r in %s, next %s)", schedule.id, team,
             schedule.cron, schedule.timezone, schedule.next_fire_at.isoformat())
    return ScheduleOut.from_domain(schedule)


def get(state: AppState, team: str, schedule_id: str) -> ScheduleDetail:
    with state.db.transaction() as session:
        schedule = repo.get_schedule(session, schedule_id, team=team)
        runs, _ = repo.list_runs(session, schedule_id, limit=RECENT_RUNS)
        verdicts = repo.promotion_verdicts(session, [r.job_id for r in runs if r.job_id])
    return ScheduleDetail(
        **ScheduleOut.from_domain(schedule).model_dump(),
        recent_runs=[ScheduleRunOut.from_domain(r, verdicts.get(r.job_id or "")) for r in runs],
    )


def list_page(state: AppState, team: str, *, limit: int, cursor: str | None) -> SchedulePage:
    before = decode_cursor(cursor) if cursor else None
    with state.db.transaction() as session:
        schedules, next_seq = repo.list_schedules(session, team, limit=limit, before_seq=before)
    return SchedulePage(
        items=[ScheduleOut.from_domain(s) for s in schedules],
        next_cursor=encode_cursor(next_seq) if next_seq is not None else None,
    )


def runs_page(
    state: AppState, team: str, schedule_id: str, *, limit: int, cursor: str | None
) -> ScheduleRunPage:
    before = decode_cursor(cursor) if cursor else None
    with state.db.transaction() as session:
        repo.get_schedule(session, schedule_id, team=team)  # 404 for other teams' schedules
        runs, next_id = repo.list_runs(session, schedule_id, limit=limit, before_id=before)
        verdicts = repo.promotion_verdicts(session, [r.job_id for r in runs if r.job_id])
    return ScheduleRunPage(
        items=[ScheduleRunOut.from_domain(r, verdicts.get(r.job_id or "")) for r in runs],
        next_cursor=encode_cursor(next_id) if next_id is not None else None,
    )


def update(state: AppState, team: str, schedule_id: str, body: ScheduleUpdate) -> ScheduleOut:
    """Change a schedule (pause, resume, cron, time zone, template, …).

    Raises:
        ScheduleNotFound: no such schedule for this team.
        AccessDenied, LocationInvalid, ModelNotFound, LimitExceeded, DatasetError,
        WeightsError: a new spec is refused (:func:`_check_template`).
    """
    if body.spec is not None:
        _check_template(state, team, body.spec)
    changes = repo.ScheduleChanges(
        name=body.name,
        cron=body.cron,
        timezone=body.timezone,
        spec=body.spec.model_dump(mode="json") if body.spec is not None else None,
        only_if_dataset_changed=body.only_if_dataset_changed,
        paused=body.paused,
    )
    with state.db.transaction() as session:
        schedule = repo.update_schedule(session, schedule_id, changes, team=team)
    log.info("schedule %s changed by team %s (%s)", schedule_id, team,
             ", ".join(sorted(body.model_dump(exclude_none=True))) or "nothing")
    return ScheduleOut.from_domain(schedule)


def fire_now(state: AppState, team: str, schedule_id: str) -> ScheduleOut:
    """Make a schedule due now (the leading dispatcher fires it on its next loop).

    Raises:
        ScheduleNotFound: no such schedule for this team.
        ScheduleStateConflict: it is paused.
    """
    with state.db.transaction() as session:
        schedule = repo.fire_now(session, schedule_id, team=team)
    log.info("schedule %s made due now by team %s", schedule_id, team)
    return ScheduleOut.from_domain(schedule)


def delete(state: AppState, team: str, schedule_id: str) -> None:
    with state.db.transaction() as session:
        repo.delete_schedule(session, schedule_id, team=team)
    log.info("schedule %s deleted by team %s", schedule_id, team)
