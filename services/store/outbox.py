"""The outbox: what a team's tools hear about, written in the transaction of the change itself.

Nothing here sends anything: each function adds a row to ``webhook_events`` in the caller's
transaction (like services/store/jobs.py, it never commits), and the dispatcher's relay
(services/dispatcher/webhook_relay.py) fans the rows out to the team's subscriptions and
delivers them. A change that commits has its event; one that rolls back has none; a process
killed after the commit loses nothing, because the row is in the database.

Where each event is recorded, and in which transaction:

- ``job.succeeded``/``failed``/``cancelled``: :func:`job_finished`, called by
  ``jobs.transition`` in the job's terminal transition;
- ``schedule.run_failed``: :func:`schedule_run_failed`, called by ``schedules.record_run``
  with the run's row;
- ``model.published``/``promoted``/``kept`` and a job's ``alias.moved``: the relay, from the
  job's registry records, in the fan-out of the job's terminal event (``expand``);
- ``alias.moved`` through the API: :func:`begin_alias_move` before the object-store write,
  :func:`confirm_alias_move` after it (below);
- ``webhook.disabled``: services/store/webhooks.py ``record_attempt``, with the
  subscription's disabling.

Model events live in the object store (a manifest written last, a decision record, an alias
log record), which cannot share a transaction with the database. A job writes them before it
ends, and its end is a transition the dispatcher always records (it settles every run from the
backend, even one that never reported); the relay reads them when it fans out that transition's
event. An alias moved through the API is recorded *before* the write, as ``unconfirmed``, and
confirmed after it; an API killed in between leaves the intent, which the relay resolves from
the alias log after a grace period (the record at that sequence number exists: the event is
delivered; it does not: the intent is dropped).

Event ids are derived from what happened (:func:`event_id`): a job's end, a version's
publication, an alias's n-th move each have one id, so two paths (or a retry after a crash)
recording the same thing make one row (``INSERT … ON CONFLICT DO NOTHING``), and a receiver
de-duplicates deliveries by it (``webhook-id``).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, delete, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.store.tables import JobRow, ScheduleRow, ScheduleRunRow, WebhookEventRow
from trainforge.spec import JobKind
from trainforge.states import JobState
from trainforge.webhooks import EventType

_EVENTS = cast(Table, WebhookEventRow.__table__)

#: The job states a subscription hears about, and their event types.
JOB_EVENTS = {
    JobState.SUCCEEDED: EventType.JOB_SUCCEEDED,
    JobState.FAILED: EventType.JOB_FAILED,
    JobState.CANCELLED: EventType.JOB_CANCELLED,
}
#: Job kinds that publish model versions (whose registry records the relay reads).
PUBLISHING_KINDS = frozenset({JobKind.TRAIN.value, JobKind.SWEEP.value, JobKind.EXPORT.value})


class EventState(StrEnum):
    UNCONFIRMED = "unconfirmed"  # an alias move the API has not confirmed yet
    READY = "ready"  # to be fanned out
    FANNED = "fanned"  # its deliveries exist


def event_id(team: str, type_: str, key: str) -> str:
    """The id of the event ``type_`` about ``key`` (a job id, ``model@version``, …) of ``team``:
    ``evt_`` and 32 hex characters, the same whoever records it."""
    digest = hashlib.sha256(f"{team}\x00{type_}\x00{key}".encode()).hexdigest()
    return f"evt_{digest[:32]}"


def record(
    session: Session,
    *,
    team: str,
    type_: EventType,
    key: str,
    time: datetime,
    data: dict[str, Any],
    expand: bool = False,
    state: EventState = EventState.READY,
) -> str:
    """Add an event, unless one with its id exists. Returns the id.

    Args:
        key: what makes the event unique within its team and type.
        data: the object it is about, as JSON (the delivery body's ``data``).
        expand: a finished job's event: read its registry records before fanning it out.
    """
    new_id = event_id(team, type_.value, key)
    values = {"id": new_id, "team": team, "type": type_.value, "time": time, "data": data,
              "state": state.value, "expand": expand, "created_at": datetime.now(UTC)}
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(_EVENTS).values(values)
                    .on_conflict_do_nothing(index_elements=["id"]))
    return new_id


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def job_object(row: JobRow) -> dict[str, Any]:
    """A job as a webhook body's ``data`` holds it (the fields of GET /v1/jobs/{id})."""
    error = ({"code": row.error_code, "message": row.error_message or ""}
             if row.error_code is not None else None)
    return {
        "id": row.id, "team": row.team, "kind": row.kind, "name": row.name, "state": row.state,
        "created_at": _iso(row.created_at), "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at), "attempts": row.attempts,
        "max_attempts": row.max_attempts, "metrics": dict(row.metrics or {}), "error": error,
        "schedule_id": row.schedule_id,
    }


def job_finished(session: Session, row: JobRow, target: JobState, now: datetime) -> None:
    """The event of a job's terminal transition (called by ``jobs.transition``)."""
    type_ = JOB_EVENTS.get(target)
    if type_ is None:
        return
    # A job that never started published nothing: no registry to read.
    expand = row.kind in PUBLISHING_KINDS and row.started_at is not None
    record(session, team=row.team, type_=type_, key=row.id, time=now, data=job_object(row),
           expand=expand)


def schedule_run_failed(session: Session, schedule: ScheduleRow, run: ScheduleRunRow) -> None:
    """The event of a fire time that submitted no job (called by ``schedules.record_run``)."""
    data = {
        "schedule": {"id": schedule.id, "name": schedule.name, "cron": schedule.cron,
                     "timezone": schedule.timezone},
        "run": {"id": run.id, "fire_time": _iso(run.fire_time), "outcome": run.outcome,
                "message": run.message},
    }
    record(session, team=schedule.team, type_=EventType.SCHEDULE_RUN_FAILED,
           key=f"{schedule.id}@{run.fire_time.isoformat()}", time=run.created_at, data=data)


# --- alias moves through the API ----------------------------------------------------------


def alias_move_key(model: str, alias: str, seq: int) -> str:
    """What identifies an alias move: the n-th record of the alias's log."""
    return f"{model}/{alias}/{seq}"


def _moved_at(move: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(move["moved_at"]))


def begin_alias_move(session: Session, team: str, move: dict[str, Any]) -> str:
    """Record an alias move about to be written to the object store, as unconfirmed.

    Args:
        move: the alias log record that will be written (``AliasMove.to_json()``).

    Returns:
        The event's id.
    """
    return record(session, team=team, type_=EventType.ALIAS_MOVED,
                  key=alias_move_key(move["model"], move["alias"], int(move["seq"])),
                  time=_moved_at(move), data=move, state=EventState.UNCONFIRMED)


def confirm_alias_move(session: Session, team: str, move: dict[str, Any]) -> str:
    """The alias log record ``move`` exists: make its event ready (recording it if the intent
    is gone, e.g. resolved away by a relay that did not see the record yet)."""
    key = alias_move_key(move["model"], move["alias"], int(move["seq"]))
    found = event_id(team, EventType.ALIAS_MOVED.value, key)
    changed = session.execute(
        update(_EVENTS)
        .where(_EVENTS.c.id == found, _EVENTS.c.state == EventState.UNCONFIRMED.value)
        .values(state=EventState.READY.value, data=move, time=_moved_at(move)))
    if not changed.rowcount:  # type: ignore[attr-defined]
        record(session, team=team, type_=EventType.ALIAS_MOVED, key=key, time=_moved_at(move),
               data=move)
    return found


def abandon_alias_move(session: Session, team: str, move: dict[str, Any]) -> None:
    """The alias log record was certainly not written (another move won): drop its intent."""
    key = alias_move_key(move["model"], move["alias"], int(move["seq"]))
    session.execute(delete(_EVENTS).where(
        _EVENTS.c.id == event_id(team, EventType.ALIAS_MOVED.value, key),
        _EVENTS.c.state == EventState.UNCONFIRMED.value))
