"""The schedule repository: schedules, their runs, and how a fire time is recorded.

Like services/store/jobs.py, every function takes the caller's :class:`Session` and never
commits. :func:`record_run` is the one place a fire time is settled: it re-reads the schedule
under a row lock, refuses if another dispatcher (or a user's change) moved it on meanwhile, and
inserts the run row (with a ``schedule.run_failed`` webhook event when no job came of it),
whose UNIQUE (schedule_id, fire_time) refuses a second run of the same fire time whatever
happens (the caller's transaction also holds the job, if one was created).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from services.store import cron, outbox
from services.store.clock import utcnow
from services.store.domain import NewSchedule, RunOutcome, Schedule, ScheduleRun
from services.store.rows import owned_row, page
from services.store.tables import EventRow, ScheduleRow, ScheduleRunRow
from trainforge.errors import LimitExceeded, ScheduleNotFound, ScheduleStateConflict

log = logging.getLogger(__name__)


class ScheduleMoved(Exception):
    """The schedule changed since it was read (fired elsewhere, paused, edited or deleted)."""


def _schedule(row: ScheduleRow) -> Schedule:
    return Schedule(
        id=row.id,
        team=row.team,
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        spec=dict(row.spec),
        only_if_dataset_changed=row.only_if_dataset_changed,
        paused=row.paused,
        created_at=row.created_at,
        updated_at=row.updated_at,
        next_fire_at=row.next_fire_at,
        last_fire_at=row.last_fire_at,
        last_outcome=RunOutcome(row.last_outcome) if row.last_outcome else None,
        last_job_id=row.last_job_id,
        dataset_fingerprint=row.dataset_fingerprint,
        dataset_fingerprint_at=row.dataset_fingerprint_at,
    )


def _run(row: ScheduleRunRow) -> ScheduleRun:
    return ScheduleRun(
        id=row.id,
        schedule_id=row.schedule_id,
        fire_time=row.fire_time,
        outcome=RunOutcome(row.outcome),
        job_id=row.job_id,
        message=row.message,
        fingerprint=row.fingerprint,
        created_at=row.created_at,
    )


def _row(session: Session, schedule_id: str, team: str | None, *, lock: bool = False
         ) -> ScheduleRow:
    return owned_row(session, ScheduleRow, schedule_id, team, lock=lock,
                     missing=ScheduleNotFound)


# --- reading -------------------------------------------------------------------------------


def get_schedule(session: Session, schedule_id: str, *, team: str | None) -> Schedule:
    """One schedule.

    Args:
        team: the caller's team; ``None`` only for internal callers (the dispatcher).

    Raises:
        ScheduleNotFound: no such schedule, or it belongs to another team.
    """
    return _schedule(_row(session, schedule_id, team))


def list_schedules(
    session: Session, team: str, *, limit: int = 50, before_seq: int | None = None
) -> tuple[list[Schedule], int | None]:
    """A page of a team's schedules, newest first, and the cursor of the next page."""
    query = select(ScheduleRow).where(ScheduleRow.team == team)
    if before_seq is not None:
        query = query.where(ScheduleRow.seq < before_seq)
    rows, next_seq = page(session, query.order_by(ScheduleRow.seq.desc()), limit,
                          lambda r: r.seq)
    return [_schedule(r) for r in rows], next_seq


def list_runs(
    session: Session, schedule_id: str, *, limit: int = 50, before_id: int | None = None
) -> tuple[list[ScheduleRun], int | None]:
    """A page of a schedule's runs, newest first, and the cursor of the next page."""
    query = select(ScheduleRunRow).where(ScheduleRunRow.schedule_id == schedule_id)
    if before_id is not None:
        query = query.where(ScheduleRunRow.id < before_id)
    rows, next_id = page(session, query.order_by(ScheduleRunRow.id.desc()), limit,
                         lambda r: r.id)
    return [_run(r) for r in rows], next_id


def promotion_verdicts(session: Session, job_ids: list[str]) -> dict[str, str]:
    """job id → the promote step's verdict line ("promoted vX → vY …" / "kept vX: …"), for the
    jobs among ``job_ids`` that reported one (jobs/train/promote.py posts it as a message)."""
    if not job_ids:
        return {}
    rows = session.execute(
        select(EventRow.job_id, EventRow.reason, EventRow.data)
        .where(EventRow.job_id.in_(job_ids), EventRow.type == "message")
        .order_by(EventRow.id))
    return {job_id: reason for job_id, reason, data in rows
            if isinstance(data, dict) and data.get("promotion")}


def due_schedules(session: Session, now: datetime, *, limit: int = 50) -> list[Schedule]:
    """Enabled schedules whose next fire time has come, the most overdue first."""
    rows = session.scalars(
        select(ScheduleRow)
        .where(ScheduleRow.paused.is_(False), ScheduleRow.next_fire_at <= now)
        .order_by(ScheduleRow.next_fire_at, ScheduleRow.seq)
        .limit(limit)
    )
    return [_schedule(r) for r in rows]


# --- writing -------------------------------------------------------------------------------


def count_schedules(session: Session, team: str) -> int:
    """The team's schedules, paused ones included."""
    return int(session.scalar(select(func.count()).where(ScheduleRow.team == team)) or 0)


def insert_schedule(session: Session, new: NewSchedule, *, max_schedules: int,
                    now: datetime | None = None) -> Schedule:
    """Create a schedule if its team has fewer than ``max_schedules``; its first fire time is
    the first after ``now``.

    Exact under concurrent creations: on PostgreSQL the team's schedule lock (a
    transaction-scoped advisory lock) is taken before counting, so two creations of one team
    count one after the other; SQLite serialises every transaction anyway.

    Raises:
        LimitExceeded: the team already has ``max_schedules`` schedules.
    """
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext('trainforge.schedules'), "
                             "hashtext(:team))"), {"team": new.team})
    count = count_schedules(session, new.team)
    if count >= max_schedules:
        raise LimitExceeded(
            f"team {new.team!r} has {count} schedules, the most it may have (max_schedules: "
            f"{max_schedules}); delete one it no longer needs (trainforge schedules delete ID) "
            "or ask an operator to raise the team's limit")
    row = ScheduleRow(
        id=new.id,
        team=new.team,
        name=new.name,
        cron=new.cron,
        timezone=new.timezone,
        spec=new.spec,
        only_if_dataset_changed=new.only_if_dataset_changed,
        paused=new.paused,
        created_at=now,
        updated_at=now,
        next_fire_at=cron.next_after(new.cron, new.timezone, now),
    )
    session.add(row)
    session.flush()
    return _schedule(row)


@dataclass(frozen=True, slots=True)
class ScheduleChanges:
    """What a PATCH changes; ``None`` leaves a field as it is."""

    name: str | None = None
    cron: str | None = None
    timezone: str | None = None
    spec: dict[str, Any] | None = None
    only_if_dataset_changed: bool | None = None
    paused: bool | None = None


def update_schedule(
    session: Session, schedule_id: str, changes: ScheduleChanges, *, team: str,
    now: datetime | None = None,
) -> Schedule:
    """Apply ``changes``. A new cron or time zone, or a resume, recomputes the next fire time
    from ``now``: resuming never fires the times that passed while the schedule was paused.

    Raises:
        ScheduleNotFound: no such schedule for this team.
    """
    now = now or utcnow()
    row = _row(session, schedule_id, team, lock=True)
    resumed = changes.paused is False and row.paused
    for name in ("name", "cron", "timezone", "spec", "only_if_dataset_changed", "paused"):
        value = getattr(changes, name)
        if value is not None:
            setattr(row, name, value)
    if changes.cron is not None or changes.timezone is not None or resumed:
        row.next_fire_at = cron.next_after(row.cron, row.timezone, now)
    row.updated_at = now
    return _schedule(row)


def fire_now(session: Session, schedule_id: str, *, team: str, now: datetime | None = None
             ) -> Schedule:
    """Make the schedule due at ``now``: the leading dispatcher fires it on its next loop
    (through the usual path, dataset check included), then it returns to its cron times.

    Raises:
        ScheduleNotFound: no such schedule for this team.
        ScheduleStateConflict: the schedule is paused.
    """
    now = now or utcnow()
    row = _row(session, schedule_id, team, lock=True)
    if row.paused:
        raise ScheduleStateConflict(
            f"schedule {schedule_id} is paused; resume it first (PATCH paused=false)"
        )
    row.next_fire_at = min(row.next_fire_at, now)
    row.updated_at = now
    return _schedule(row)


def delete_schedule(session: Session, schedule_id: str, *, team: str) -> None:
    """Delete a schedule and its runs (the jobs it submitted stay).

    Raises:
        ScheduleNotFound: no such schedule for this team.
    """
    # Its runs go with it: ON DELETE CASCADE.
    session.delete(_row(session, schedule_id, team, lock=True))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """How one fire time of a schedule ended (see :func:`record_run`)."""

    fire_time: datetime
    outcome: RunOutcome
    message: str
    next_fire_at: datetime
    job_id: str | None = None
    fingerprint: str | None = None


def record_run(session: Session, seen: Schedule, record: RunRecord) -> ScheduleRun:
    """Settle one fire time of a schedule read as ``seen``: insert its run and move the
    schedule on to ``record.next_fire_at``.

    A submitted run also remembers its dataset fingerprint, the one later runs compare with.

    Raises:
        ScheduleMoved: the schedule is gone, paused, or its next fire time is no longer the one
            in ``seen`` (another dispatcher fired it, or its owner changed it): nothing to do.
        IntegrityError: (at flush) this fire time already has a run.
    """
    row = session.scalars(
        select(ScheduleRow).where(ScheduleRow.id == seen.id).with_for_update()
    ).one_or_none()
    if row is None or row.paused or row.next_fire_at != seen.next_fire_at:
        raise ScheduleMoved(seen.id)
    now = utcnow()
    run = ScheduleRunRow(
        schedule_id=seen.id,
        fire_time=record.fire_time,
        outcome=record.outcome.value,
        job_id=record.job_id,
        message=record.message,
        fingerprint=record.fingerprint,
        created_at=now,
    )
    session.add(run)
    session.flush()  # the unique (schedule_id, fire_time) refuses a second run here
    row.next_fire_at = record.next_fire_at
    row.last_fire_at = record.fire_time
    row.last_outcome = record.outcome.value
    if record.outcome is RunOutcome.SUBMITTED:
        row.last_job_id = record.job_id
        if record.fingerprint is not None:
            row.dataset_fingerprint = record.fingerprint
            row.dataset_fingerprint_at = record.fire_time
    row.updated_at = now
    if record.outcome is RunOutcome.FAILED:
        outbox.schedule_run_failed(session, row, run)
    return _run(run)
