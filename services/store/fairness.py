"""Which queued jobs the dispatcher claims next, fairly across teams.

:func:`services.store.dispatch.claim` does not take the oldest jobs first but the oldest job of
the team with the fewest launched jobs (STARTING, RUNNING, CANCELLING), one job at a time,
counting each job it claims; so one team's long runs or large backlog never hold back another
team's first job, and a batch interleaves teams. A team at its ``max_running_jobs`` is skipped
(its jobs stay QUEUED, or RETRYING). Because the counts are read under the claim lock, neither
that limit nor the dispatcher's ``max_active`` can be overshot by replicas claiming at the same
time.

Everything here reads under the claim lock (:func:`take_claim_lock`) in the claiming
transaction; services/store/dispatch.py then locks and moves the chosen jobs.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select, text
from sqlalchemy.orm import Session

from services.store.tables import JobRow
from trainforge.states import JobState

#: States in which a job's current attempt may have a run on a backend.
LAUNCHED_STATES = (JobState.STARTING.value, JobState.RUNNING.value, JobState.CANCELLING.value)


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
# two-key form never collides with the one-key team locks of trainforge_create_job()
# (services/store/creation.py).
_TRY_CLAIM_LOCK = text(
    "SELECT pg_try_advisory_xact_lock(hashtext('trainforge.claim'), hashtext(current_schema()))"
)


def take_claim_lock(session: Session) -> bool:
    """Serialise claims across dispatchers (PostgreSQL); SQLite's BEGIN IMMEDIATE already does.

    Without it, two replicas would both count a team's launched jobs before either commits and
    both claim up to its limit (and up to ``max_active``).
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(_TRY_CLAIM_LOCK).scalar_one())


def dispatchable(now: datetime) -> ColumnElement[bool]:
    """QUEUED jobs, and RETRYING jobs whose retry delay has passed."""
    return or_(
        JobRow.state == JobState.QUEUED.value,
        and_(
            JobRow.state == JobState.RETRYING.value,
            or_(JobRow.retry_at.is_(None), JobRow.retry_at <= now),
        ),
    )


def claim_order(
    session: Session,
    launched: dict[str, int],
    limit: int,
    max_running: Callable[[str], int | None],
    now: datetime,
) -> list[int]:
    """The ``seq`` of the jobs to claim, in claim order (see the module's docstring).

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
        .where(dispatchable(now))
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
