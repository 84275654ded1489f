"""What the dispatcher reads and writes: claims, launches, outcomes and cancels.

The protocol that makes the dispatcher crash-safe (see services/dispatcher/dispatcher.py):

1. :func:`claim` (one transaction): QUEUED/RETRYING jobs → STARTING, with a new attempt row
   whose ``handle`` is NULL. PostgreSQL: the claiming dispatcher holds a transaction-scoped
   advisory lock (replicas take turns; one that finds it taken claims nothing this loop) and
   locks the jobs it claims ``FOR UPDATE SKIP LOCKED``, so dispatchers never claim the same
   job; SQLite: the transaction holds the database write lock.
2. ``backend.launch()`` outside any transaction; it is idempotent by (job id, attempt).
3. :func:`record_launch` stores the handle.

A dispatcher killed between 1 and 3 leaves an attempt with a NULL handle; :func:`unlaunched`
finds it and the next dispatcher calls ``launch`` again, which returns the run the first call
started if there was one, so a job is neither lost nor launched twice.

Fairness: :func:`claim` takes jobs in the order services/store/fairness.py explains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from services.store.clock import utcnow
from services.store.domain import Attempt, Job
from services.store.events import record_event, transition
from services.store.fairness import (
    LAUNCHED_STATES,
    claim_order,
    dispatchable,
    launched_by_team,
    take_claim_lock,
)
from services.store.jobs import to_domain
from services.store.tables import AttemptRow, JobRow
from trainforge.errors import non_retryable_codes
from trainforge.states import JobState
from trainforge.text import for_event

log = logging.getLogger(__name__)

#: Error codes a retry cannot fix: the job fails at once whatever its retries (each error
#: class says whether it is retryable: trainforge/errors.py).
NON_RETRYABLE_ERRORS = non_retryable_codes()

@dataclass(frozen=True, slots=True)
class Assignment:
    """A job and its current attempt, as the dispatcher needs them."""

    job: Job
    attempt: Attempt


def _attempt(row: AttemptRow) -> Attempt:
    return Attempt(
        job_id=row.job_id,
        number=row.number,
        backend=row.backend,
        handle=row.handle,
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        launched_at=row.launched_at,
        finished_at=row.finished_at,
        outcome=row.outcome,
        message=row.message,
    )


def _unlimited(_team: str) -> int | None:
    return None


def claim(
    session: Session,
    *,
    owner: str,
    backend: str,
    limit: int,
    token_sha256: Callable[[str, int], str],
    now: datetime | None = None,
    max_active: int | None = None,
    max_running: Callable[[str], int | None] = _unlimited,
) -> list[Assignment]:
    """Claim up to ``limit`` dispatchable jobs, fairly across teams (step 1 above).

    Order: the team with the fewest launched jobs first, ties to the team whose oldest
    dispatchable job is older; each claimed job counts towards its team's launched jobs, so a
    batch interleaves teams. A team at its ``max_running`` limit gets nothing.

    Args:
        owner: this dispatcher instance's id (recorded on the attempt).
        backend: the backend's name.
        limit: most jobs to claim.
        token_sha256: (job id, attempt) → SHA-256 of the attempt's job token.
        now: the current time (retry delays are compared with it).
        max_active: most launched jobs across all teams, counting those launched already
            (``None``: no bound).
        max_running: team → most launched jobs of that team at once (``None``: no limit).

    Returns:
        The claimed jobs (now STARTING) with their new attempts, in claim order. Empty when
        another dispatcher is claiming at this moment (PostgreSQL).
    """
    if limit <= 0 or not take_claim_lock(session):
        return []
    now = now or utcnow()
    launched = launched_by_team(session)
    if max_active is not None:
        limit = min(limit, max_active - sum(launched.values()))
        if limit <= 0:
            return []
    plan = claim_order(session, launched, limit, max_running, now)
    if not plan:
        return []
    # The state is checked again on the locked rows: a job cancelled since claim_order read it is
    # not claimed. SKIP LOCKED: a row another transaction holds (a cancel in progress) is left
    # for the next loop rather than waited for.
    rows = {
        row.seq: row
        for row in session.scalars(
            select(JobRow)
            .where(JobRow.seq.in_(plan), dispatchable(now))
            .with_for_update(skip_locked=True)
        )
    }
    claimed = []
    for seq in plan:
        row = rows.get(seq)
        if row is None:
            continue
        number = row.attempts + 1
        row.attempts = number
        row.retry_at = None
        transition(session, row, JobState.STARTING, f"attempt {number} claimed by {owner}",
                   now=now)
        attempt = AttemptRow(
            job_id=row.id,
            number=number,
            backend=backend,
            handle=None,
            token_sha256=token_sha256(row.id, number),
            claimed_by=owner,
            claimed_at=now,
        )
        session.add(attempt)
        session.flush()
        claimed.append(Assignment(to_domain(row), _attempt(attempt)))
    return claimed


def _current(session: Session, job_id: str, number: int) -> tuple[JobRow, AttemptRow] | None:
    job = session.scalars(
        select(JobRow).where(JobRow.id == job_id).with_for_update()
    ).one_or_none()
    if job is None or job.attempts != number:
        return None
    attempt = session.get(AttemptRow, (job_id, number))
    if attempt is None:
        return None
    return job, attempt


def record_launch(session: Session, job_id: str, number: int, handle: str) -> bool:
    """Store the handle of a launched attempt (step 3). False if the attempt is stale."""
    found = _current(session, job_id, number)
    if found is None:
        return False
    job, attempt = found
    if attempt.handle is None:
        now = utcnow()
        attempt.handle = handle
        attempt.launched_at = now
        record_event(session, job, "message", f"attempt {number} launched on {attempt.backend}",
               now=now, data={"handle": handle})
    return True


def unlaunched(
    session: Session, *, owner: str, grace: timedelta, limit: int = 100
) -> list[Assignment]:
    """Attempts claimed but never recorded as launched, that this dispatcher should finish.

    Those of other dispatcher instances (a predecessor that died) at once; this instance's own
    only after ``grace`` (it normally records them itself within milliseconds).
    """
    cutoff = utcnow() - grace
    return _current_attempts(
        session,
        AttemptRow.handle.is_(None),
        or_(AttemptRow.claimed_by != owner, AttemptRow.claimed_at < cutoff),
        limit=limit,
    )


def in_flight(session: Session, *, limit: int = 1000) -> list[Assignment]:
    """Launched attempts whose outcome is not recorded yet (to poll or cancel).

    With the jobs in a launched state, the SUCCEEDED ones whose run has not been seen to end:
    a job reports its own success and then exits, shipping its last log lines; polling the
    run until then records when and how it ended (what :func:`outputs_final` waits for).
    """
    return _current_attempts(session, AttemptRow.handle.is_not(None), limit=limit,
                             states=(*LAUNCHED_STATES, JobState.SUCCEEDED.value))


def _current_attempts(
    session: Session, *conditions: ColumnElement[bool], limit: int,
    states: tuple[str, ...] = LAUNCHED_STATES,
) -> list[Assignment]:
    """Jobs in ``states`` with their current, unfinished attempt, oldest job first."""
    rows = session.execute(
        select(JobRow, AttemptRow)
        .join(
            AttemptRow,
            and_(AttemptRow.job_id == JobRow.id, AttemptRow.number == JobRow.attempts),
        )
        .where(
            JobRow.state.in_(states),
            AttemptRow.finished_at.is_(None),
            *conditions,
        )
        .order_by(JobRow.seq)
        .limit(limit)
    ).all()
    return [Assignment(to_domain(j), _attempt(a)) for j, a in rows]


def cancel_idle(session: Session) -> list[str]:
    """CANCELLING jobs with no run to stop (their last attempt already ended) → CANCELLED."""
    rows = list(
        session.scalars(
            select(JobRow)
            .outerjoin(
                AttemptRow,
                and_(AttemptRow.job_id == JobRow.id, AttemptRow.number == JobRow.attempts),
            )
            .where(
                JobRow.state == JobState.CANCELLING.value,
                or_(AttemptRow.job_id.is_(None), AttemptRow.finished_at.is_not(None)),
            )
            .with_for_update(of=JobRow, skip_locked=True)
        )
    )
    for row in rows:
        transition(session, row, JobState.CANCELLED, "cancelled; no run was active")
    return [r.id for r in rows]


def mark_running(session: Session, job_id: str, number: int) -> None:
    """The backend reports the run started: STARTING → RUNNING (if still STARTING)."""
    found = _current(session, job_id, number)
    if found is not None and found[0].state == JobState.STARTING.value:
        transition(session, found[0], JobState.RUNNING, "the backend reports the run started")


def settle(
    session: Session,
    job_id: str,
    number: int,
    *,
    succeeded: bool,
    message: str,
    retry_delay: timedelta,
    error_code: str | None = None,
) -> JobState | None:
    """Record how an attempt ended and move the job on.

    Success → SUCCEEDED. Otherwise: a CANCELLING job → CANCELLED; with retries left and an
    error a retry can fix → RETRYING (relaunched after ``retry_delay``); else FAILED. A job
    already terminal (one that reported its own success) only gets its attempt recorded.

    Args:
        error_code: why it failed when the dispatcher itself knows (e.g. ``spec_tampered``);
            otherwise the code the job reported, if any.

    Returns:
        The job's new state, or None when the attempt was stale or already settled.
    """
    found = _current(session, job_id, number)
    if found is None or found[1].finished_at is not None:
        return None
    job, attempt = found
    now = utcnow()
    message = for_event(message)  # a run's output tail: the team's data, relayed
    attempt.finished_at = now
    attempt.outcome = "succeeded" if succeeded else "failed"
    attempt.message = message[:4000]
    state = JobState(job.state)
    if state.terminal:
        return state
    if succeeded:
        transition(session, job, JobState.SUCCEEDED, message or "the run exited 0", now=now)
    elif state is JobState.CANCELLING:
        attempt.outcome = "cancelled"
        transition(session, job, JobState.CANCELLED, "cancelled at the owner's request", now=now)
    else:
        code = error_code or job.error_code or "run_failed"
        detail = job.error_message or message or "the run failed"
        if code not in NON_RETRYABLE_ERRORS and job.attempts < job.max_attempts:
            job.retry_at = now + retry_delay
            transition(
                session, job, JobState.RETRYING,
                f"attempt {number} failed ({detail}); retrying "
                f"({job.max_attempts - job.attempts} attempt(s) left)",
                now=now,
            )
        else:
            job.error_code, job.error_message = code, detail
            why = "not retryable" if code in NON_RETRYABLE_ERRORS else "no retries left"
            transition(session, job, JobState.FAILED,
                       f"attempt {number} failed ({detail}); {why}", now=now)
    return JobState(job.state)


def attempts_of(session: Session, job_id: str) -> list[Attempt]:
    rows = session.scalars(
        select(AttemptRow).where(AttemptRow.job_id == job_id).order_by(AttemptRow.number)
    )
    return [_attempt(r) for r in rows]


def outputs_final(session: Session, job: Job) -> bool:
    """Whether nothing more of the job will be written: it is terminal and its last run has
    exited (the dispatcher saw the exit) or never launched.

    A run reports its outcome before it exits and uploads its last log lines as it exits, so
    a terminal state alone does not mean its log and artifacts are final.
    """
    if not job.state.terminal:
        return False
    attempts = attempts_of(session, job.id)
    if not attempts:
        return True
    last = attempts[-1]
    return last.finished_at is not None or last.handle is None
