"""Job-lifecycle metrics, observed by whichever process commits the change.

The API commits submissions, cancels of queued jobs and the states jobs report; the dispatcher
commits claims, retries and outcomes. Each change is counted exactly once, by the process that
committed it, and only after the commit succeeded (a rolled-back transition never shows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy import event
from sqlalchemy.orm import Session

from trainforge.states import JobState

# No team label: /metrics is anonymous (Prometheus scrapes it without a token), and team names
# are not for everyone who can reach the port. Per-team numbers come from the API (authorised).
JOBS_SUBMITTED = Counter(
    "trainforge_jobs_submitted_total", "Jobs accepted by the API.", ["kind"]
)
JOBS_FINISHED = Counter(
    "trainforge_jobs_finished_total", "Jobs that reached a terminal state.", ["kind", "state"]
)
QUEUE_WAIT = Histogram(
    "trainforge_job_queue_wait_seconds",
    "Time from submission (QUEUED) to the first launch (STARTING).",
    ["kind"],
    buckets=(0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
JOB_DURATION = Histogram(
    "trainforge_job_duration_seconds",
    "Time from the first launch (STARTING) to a terminal state.",
    ["kind", "state"],
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800),
)

_KEY = "trainforge_observations"


@dataclass(frozen=True, slots=True)
class Submitted:
    kind: str
    #: Kept for callers and logs; never exported as a label (see JOBS_SUBMITTED).
    team: str = ""


@dataclass(frozen=True, slots=True)
class Transitioned:
    kind: str
    source: JobState
    target: JobState
    at: datetime
    created_at: datetime
    started_at: datetime | None


def observe(session: Session, item: Submitted | Transitioned) -> None:
    """Queue an observation; it is emitted only if ``session``'s transaction commits."""
    session.info.setdefault(_KEY, []).append(item)


def _emit(item: Submitted | Transitioned) -> None:
    if isinstance(item, Submitted):
        JOBS_SUBMITTED.labels(kind=item.kind).inc()
        return
    if item.source is JobState.QUEUED and item.target is JobState.STARTING:
        QUEUE_WAIT.labels(kind=item.kind).observe(
            max((item.at - item.created_at).total_seconds(), 0.0)
        )
    if item.target.terminal:
        JOBS_FINISHED.labels(kind=item.kind, state=item.target.value).inc()
        if item.started_at is not None:
            JOB_DURATION.labels(kind=item.kind, state=item.target.value).observe(
                max((item.at - item.started_at).total_seconds(), 0.0)
            )


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    for item in session.info.pop(_KEY, ()):
        _emit(item)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session, *_: Any) -> None:
    session.info.pop(_KEY, None)
