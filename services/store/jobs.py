"""Reading jobs: one job, a team's pages of jobs, their events, counts and best scores.

Every function takes the caller's :class:`Session` and never commits: the caller decides the
transaction (see ``Database.transaction``). A job is created in services/store/creation.py
(through services/store/submission.py) and changes state in services/store/events.py.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from services.store.domain import Event, Job, JobError, Progress, Trial
from services.store.rows import owned_row, page
from services.store.tables import EventRow, JobRow, TrialRow
from trainforge.errors import JobNotFound
from trainforge.spec import JobKind
from trainforge.states import TERMINAL_STATES, JobState

#: States a team's active-job limit counts.
UNFINISHED_STATES = frozenset(JobState) - TERMINAL_STATES
#: Their values, sorted: what the statements that count them bind.
UNFINISHED_VALUES = sorted(s.value for s in UNFINISHED_STATES)


def job_row(session: Session, job_id: str, team: str | None, *, lock: bool = False) -> JobRow:
    """A job's row (locked ``FOR UPDATE`` with ``lock``), for the store's own writes.

    Raises:
        JobNotFound: no such job, or it belongs to another team than ``team`` (None: any).
    """
    return owned_row(session, JobRow, job_id, team, lock=lock, missing=JobNotFound)


def _trial(row: TrialRow) -> Trial:
    return Trial(row.trial, row.epoch, row.epochs, dict(row.metrics), row.updated_at)


def _trials(session: Session, job_id: str) -> tuple[Trial, ...]:
    rows = session.scalars(
        select(TrialRow).where(TrialRow.job_id == job_id).order_by(TrialRow.trial)
    )
    return tuple(_trial(r) for r in rows)


def to_domain(row: JobRow, trials: tuple[Trial, ...] = ()) -> Job:
    progress = (
        Progress(row.progress_epoch, row.progress_epochs)
        if row.progress_epoch is not None and row.progress_epochs is not None
        else None
    )
    error = (
        JobError(row.error_code, row.error_message or "") if row.error_code is not None else None
    )
    return Job(
        id=row.id,
        team=row.team,
        kind=JobKind(row.kind),
        name=row.name,
        state=JobState(row.state),
        spec_uri=row.spec_uri,
        spec_sha256=row.spec_sha256,
        gpus=row.gpus,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=progress,
        metrics=dict(row.metrics or {}),
        error=error,
        trials=trials,
        schedule_id=row.schedule_id,
        resumed_from=row.resumed_from,
    )


def get_job(session: Session, job_id: str, *, team: str | None) -> Job:
    """One job with its sweep trials.

    Args:
        job_id: the job's id.
        team: the caller's team; ``None`` only for internal callers (dispatcher, job events).

    Raises:
        JobNotFound: no such job, or it belongs to another team.
    """
    row = job_row(session, job_id, team)
    return to_domain(row, _trials(session, job_id) if row.kind == JobKind.SWEEP else ())


def list_jobs(
    session: Session,
    team: str,
    *,
    states: Collection[JobState] = (),
    kind: JobKind | None = None,
    name: str | None = None,
    limit: int = 50,
    before_seq: int | None = None,
) -> tuple[list[Job], int | None]:
    """A page of a team's jobs, newest first (``name``: only jobs of that model name).

    Returns:
        The jobs and the cursor of the next page (``None`` on the last page).
    """
    query = select(JobRow).where(JobRow.team == team)
    if states:
        query = query.where(JobRow.state.in_([s.value for s in states]))
    if kind is not None:
        query = query.where(JobRow.kind == kind.value)
    if name is not None:
        query = query.where(JobRow.name == name)
    if before_seq is not None:
        query = query.where(JobRow.seq < before_seq)
    rows, next_seq = page(session, query.order_by(JobRow.seq.desc()), limit,
                          lambda r: r.seq)
    trials: dict[str, list[Trial]] = {}
    sweep_ids = [r.id for r in rows if r.kind == JobKind.SWEEP]
    if sweep_ids:
        for t in session.scalars(
            select(TrialRow).where(TrialRow.job_id.in_(sweep_ids)).order_by(TrialRow.trial)
        ):
            trials.setdefault(t.job_id, []).append(_trial(t))
    return [to_domain(r, tuple(trials.get(r.id, ()))) for r in rows], next_seq


# Built once with bound parameters: it runs in every submission on SQLite.
_JOBS = cast(Table, JobRow.__table__)
_COUNT_UNFINISHED = select(func.count()).where(
    _JOBS.c.team == bindparam("team"), _JOBS.c.state.in_(UNFINISHED_VALUES)
)


def count_unfinished(session: Session, team: str) -> int:
    """How many of a team's jobs are not yet in a terminal state."""
    return int(session.connection().execute(_COUNT_UNFINISHED, {"team": team}).scalar_one())


def count_by_state(session: Session) -> dict[JobState, int]:
    """Jobs currently in each state, across teams (the ``trainforge_jobs`` gauge)."""
    counts = dict.fromkeys(JobState, 0)
    for state, n in session.execute(select(JobRow.state, func.count()).group_by(JobRow.state)):
        counts[JobState(state)] = int(n)
    return counts


def best_metrics(session: Session, job_ids: Collection[str], metric: str) -> dict[str, float]:
    """The highest finite ``metric`` that any progress event (any trial) of each job reported:
    a job's best epoch, which its latest metrics are not."""
    best: dict[str, float] = {}
    if not job_ids:
        return best
    rows = session.execute(
        select(EventRow.job_id, EventRow.data)
        .where(EventRow.job_id.in_(list(job_ids)), EventRow.type == "progress")
    )
    for job_id, data in rows:
        value = ((data or {}).get("metrics") or {}).get(metric)
        if isinstance(value, int | float) and math.isfinite(value) \
                and value > best.get(job_id, -math.inf):
            best[job_id] = float(value)
    return best


def list_events(
    session: Session, job_id: str, *, after_id: int = 0, limit: int = 500
) -> list[Event]:
    """A job's events in the order they happened, after event ``after_id``."""
    rows = session.scalars(
        select(EventRow)
        .where(EventRow.job_id == job_id, EventRow.id > after_id)
        .order_by(EventRow.id)
        .limit(limit)
    )
    return [
        Event(
            id=r.id,
            job_id=r.job_id,
            time=r.time,
            type=r.type,
            from_state=JobState(r.from_state) if r.from_state else None,
            to_state=JobState(r.to_state) if r.to_state else None,
            reason=r.reason,
            attempt=r.attempt,
            trial=r.trial,
            data=dict(r.data or {}),
        )
        for r in rows
    ]


def resumed_by(session: Session, job_id: str, *, team: str) -> str | None:
    """The id of the team's job that resumed ``job_id``, if one did (the unique index)."""
    return session.scalar(
        select(JobRow.id).where(JobRow.resumed_from == job_id, JobRow.team == team)
    )


def jobs_by_ids(session: Session, job_ids: Sequence[str]) -> list[Job]:
    """Jobs by id in any team (internal use), in the order given; unknown ids are skipped."""
    rows = {r.id: r for r in session.scalars(select(JobRow).where(JobRow.id.in_(job_ids)))}
    return [to_domain(rows[i]) for i in job_ids if i in rows]
