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

Fairness: :func:`claim` does not take the oldest jobs first but the oldest job of the team with
the fewest launched jobs (STARTING, RUNNING, CANCELLING), one job at a time, counting each job
it claims; so one team's long runs or large backlog never hold back another team's first job,
and a batch interleaves teams. A team at its ``max_running_jobs`` is skipped (its jobs stay
QUEUED, or RETRYING). Because the counts are read under the claim lock, neither that limit nor
the dispatcher's ``max_active`` can be overshot by replicas claiming at the same time.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.orm import Session

from services.store.domain import Attempt, Job
from services.store.jobs import _event, to_domain, transition, utcnow
from services.store.tables import AttemptRow, JobRow
from trainforge.errors import non_retryable_codes
from trainforge.states import JobState

log = logging.getLogger(__name__)

#: Error codes a retry cannot fix: the job fails at once whatever its retries (each error
#: class says whether it is retryable: trainforge/errors.py).
NON_RETRYABLE_ERRORS = non_retryable_codes()

#: States in which a job's current attempt may have a run on a backend.
LAUNCHED_STATES = (JobState.STARTING.value, JobState.RUNNING.value, JobState.CANCELLING.value)


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


def launched_by_team(session: Session) -> dict[str, int]:
    """Launched jobs (see :data:`LAUNCHED_STATES`) per team; teams with none are left out."""
    rows = session.execute(
        select(JobRow.team, func.count())
        .where(JobRow.state.in_(LAUNCHED_STATES))
        .group_by(JobRow.team)
    )
    return {team: int(n) for team, n in rows}


# Transaction-scoped, so a dispatcher that dies mid-claim releases it with its connection;
# "try" so that a replica never waits behind another's claim (it claims on its next loop).
# Keyed by schema like the scheduler's lock: stores in other schemas do not share it. The
# two-key form never collides with the one-key team locks of services/store/jobs.py.
_TRY_CLAIM_LOCK = text(
    "SELECT pg_try_advisory_xact_lock(hashtext('trainforge.claim'), hashtext(current_schema()))"
)


def _take_claim_lock(session: Session) -> bool:
    """Serialise claims across dispatchers (PostgreSQL); SQLite's BEGIN IMMEDIATE already does.

    Without it, two replicas would both count a team's launched jobs before either commits and
    both claim up to its limit (and up to ``max_active``).
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(_TRY_CLAIM_LOCK).scalar_one())


def _dispatchable(now: datetime) -> ColumnElement[bool]:
    """QUEUED jobs, and RETRYING jobs whose retry delay has passed."""
    return or_(
        JobRow.state == JobState.QUEUED.value,
        and_(
            JobRow.state == JobState.RETRYING.value,
            or_(JobRow.retry_at.is_(None), JobRow.retry_at <= now),
        ),
    )


def _plan(
    session: Session,
    launched: dict[str, int],
    limit: int,
    max_running: Callable[[str], int | None],
    now: datetime,
) -> list[int]:
    """The ``seq`` of the jobs to claim, in claim order (see the module's "Fairness").

    Reads at most ``limit`` candidates per team (no team can get more in one batch), oldest
    first, without locking them: the caller locks the chosen ones.
    """
    ranked = (
        select(
            JobRow.team,
            JobRow.seq,
            func.row_number()
            .over(partition_by=JobRow.team, order_by=JobRow.seq)
            .label("rank"),
        )
        .where(_dispatchable(now))
        .subquery()
    )
    queues: dict[str, deque[int]] = {}
    for team, seq in session.execute(
        select(ranked.c.team, ranked.c.seq)
        .where(ranked.c.rank <= limit)
        .order_by(ranked.c.seq)
    ):
        queues.setdefault(team, deque()).append(int(seq))
    running = dict(launched)
    caps = {team: max_running(team) for team in queues}
    # (launched jobs, oldest candidate, team): the smallest goes next.
    heap = [(running.get(team, 0), queue[0], team) for team, queue in queues.items()]
    heapq.heapify(heap)
    plan: list[int] = []
    while heap and len(plan) < limit:
        count, seq, team = heapq.heappop(heap)
        cap = caps[team]
        if cap is not None and count >= cap:
            continue  # the team is at its limit: its jobs wait for one of its runs to end
        queue = queues[team]
        plan.append(queue.popleft())
        running[team] = count + 1
        if queue:
            heapq.heappush(heap, (count + 1, queue[0], team))
    return plan


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
    if limit <= 0 or not _take_claim_lock(session):
        return []
    now = now or utcnow()
    launched = launched_by_team(session)
    if max_active is not None:
        limit = min(limit, max_active - sum(launched.values()))
        if limit <= 0:
            return []
    plan = _plan(session, launched, limit, max_running, now)
    if not plan:
        return []
    # The state is checked again on the locked rows: a job cancelled since _plan read it is
    # not claimed. SKIP LOCKED: a row another transaction holds (a cancel in progress) is left
    # for the next loop rather than waited for.
    rows = {
        row.seq: row
        for row in session.scalars(
            select(JobRow)
            .where(JobRow.seq.in_(plan), _dispatchable(now))
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
        _event(session, job, "message", f"attempt {number} launched on {attempt.backend}",
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
