"""A job's life after its creation: state changes, what its run reports, its sweep trials.

Every function takes the caller's :class:`Session` and never commits. State changes go through
:func:`transition`, the one place that checks trainforge/states.py's table and writes the
matching event; the dispatcher's side of a run (claims, launches, outcomes) is
services/store/dispatch.py, which moves jobs through the same function.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from services.store import metrics, outbox
from services.store.clock import utcnow
from services.store.domain import Job
from services.store.jobs import get_job, job_row
from services.store.tables import AttemptRow, EventRow, JobRow, TrialRow
from trainforge.errors import IllegalTransition, JobStateConflict, Unauthenticated
from trainforge.events import MessageEvent, ProgressEvent, StateEvent
from trainforge.states import JobState, can_transition
from trainforge.text import for_log

log = logging.getLogger(__name__)


def record_event(
    session: Session,
    row: JobRow,
    type_: str,
    reason: str = "",
    *,
    now: datetime,
    trial: str | None = None,
    data: dict[str, Any] | None = None,
    attempt: int | None = None,
) -> None:
    """Add an event of ``type_`` to a job's log, with the job's current attempt unless
    ``attempt`` says which (a state change is recorded by :func:`transition` instead)."""
    session.add(
        EventRow(
            job_id=row.id,
            time=now,
            type=type_,
            reason=reason,
            attempt=attempt if attempt is not None else (row.attempts or None),
            trial=trial,
            data=data,
        )
    )


def transition(
    session: Session, row: JobRow, target: JobState, reason: str, *, now: datetime | None = None
) -> None:
    """Move a (locked) job row to ``target`` and record the change as an event.

    The one place that enforces ALLOWED_TRANSITIONS; timestamps follow the state, and a
    terminal state's webhook event is written with it (services/store/outbox.py).

    Raises:
        IllegalTransition: the table does not allow current → target.
    """
    now = now or utcnow()
    source = JobState(row.state)
    if not can_transition(source, target):
        raise IllegalTransition(
            f"job {row.id} cannot go from {source} to {target} ({reason})"
        )
    row.state = target.value
    row.updated_at = now
    if target is JobState.STARTING and row.started_at is None:
        row.started_at = now
    if target.terminal:
        row.finished_at = now
        row.retry_at = None
    if target is JobState.SUCCEEDED:
        row.error_code = row.error_message = None
    session.add(
        EventRow(
            job_id=row.id,
            time=now,
            type="state",
            from_state=source.value,
            to_state=target.value,
            reason=reason,
            attempt=row.attempts or None,
        )
    )
    metrics.observe(
        session,
        metrics.Transitioned(row.kind, source, target, now, row.created_at, row.started_at),
    )
    # What tools hear about (webhooks) is derived here, in the same transaction.
    outbox.job_finished(session, row, target, now)
    log.info("job %s: %s -> %s (%s)", row.id, source, target, for_log(reason))


def request_cancel(session: Session, job_id: str, *, team: str, reason: str) -> Job:
    """Cancel a job: a queued one at once, a launched one through CANCELLING.

    Raises:
        JobNotFound: no such job for this team.
        JobStateConflict: the job already finished.
    """
    row = job_row(session, job_id, team, lock=True)
    state = JobState(row.state)
    if state is JobState.QUEUED:
        transition(session, row, JobState.CANCELLED, reason)
    elif state in (JobState.STARTING, JobState.RUNNING, JobState.RETRYING):
        transition(session, row, JobState.CANCELLING, reason)
    elif state.terminal:
        raise JobStateConflict(
            f"job {job_id} already {state}; only queued or running jobs can be cancelled"
        )
    return get_job(session, job_id, team=team)


def apply_reported_event(
    session: Session,
    job_id: str,
    event: ProgressEvent | StateEvent | MessageEvent,
    *,
    attempt: int | None = None,
) -> None:
    """Record what a running job reported (the internal events route).

    Progress moves a STARTING job to RUNNING and updates the latest epoch/metrics (or the
    trial's); RUNNING and SUCCEEDED move the job when the table allows it; FAILED only records
    the error: the dispatcher decides between RETRYING and FAILED when the run exits.

    The route checks the job token first (services/store/tokens.py ``verify_job_token``), in
    its own transaction; the job may end between that check and this one, so the same rule is
    applied again here, on the locked row: nothing is recorded for a finished job, nor for an
    attempt that is no longer current or has been settled.

    Args:
        job_id: the job.
        event: what it reported.
        attempt: the attempt the caller's token belongs to; ``None`` skips the attempt check
            (the job-level one always applies).

    Raises:
        JobNotFound: no such job.
        Unauthenticated: the job (or ``attempt``) has ended since the token was checked.
    """
    row = job_row(session, job_id, None, lock=True)
    now = utcnow()
    state = JobState(row.state)
    if state.terminal:
        raise Unauthenticated(f"job {job_id} is {state}; its job tokens are no longer valid")
    if attempt is not None:
        current = session.get(AttemptRow, (job_id, attempt))
        if attempt != row.attempts or current is None or current.finished_at is not None:
            raise Unauthenticated(
                f"attempt {attempt} of job {job_id} has ended; its job token is no longer valid"
            )
    if isinstance(event, ProgressEvent):
        data: dict[str, Any] = {
            "epoch": event.epoch,
            "epochs": event.epochs,
            "metrics": dict(event.metrics),
        }
        record_event(session, row, "progress", now=now, trial=event.trial, data=data,
               attempt=event.attempt)
        if event.trial is None:
            row.progress_epoch, row.progress_epochs = event.epoch, event.epochs
            row.metrics = dict(event.metrics)
        else:
            _upsert_trial(session, job_id, event, now)
        row.updated_at = now
        if state is JobState.STARTING:
            transition(session, row, JobState.RUNNING, "first progress reported", now=now)
    elif isinstance(event, StateEvent):
        target = JobState(event.state)
        if target is JobState.FAILED:
            row.error_code = event.error_code or "job_failed"
            row.error_message = event.reason or "the job reported a failure"
            row.updated_at = now
            record_event(session, row, "message", f"job reported failure: {row.error_message}",
                   now=now, data={"error_code": row.error_code})
        elif target is state:
            pass  # e.g. RUNNING after the backend already reported the run started
        elif can_transition(state, target) and (
            target is JobState.SUCCEEDED or state is JobState.STARTING
        ):
            transition(session, row, target, event.reason or "reported by the job", now=now)
        else:
            record_event(session, row, "message",
                   f"job reported {target} while {state}" + (f": {event.reason}"
                                                              if event.reason else ""),
                   now=now)
    else:
        record_event(session, row, "message", event.message, now=now, data=dict(event.data))


def _upsert_trial(session: Session, job_id: str, event: ProgressEvent, now: datetime) -> None:
    assert event.trial is not None  # checked by the caller
    # The job row is locked by the caller, so events of one job never race here.
    trial = session.get(TrialRow, (job_id, event.trial))
    if trial is None:
        session.add(
            TrialRow(
                job_id=job_id,
                trial=event.trial,
                epoch=event.epoch,
                epochs=event.epochs,
                metrics=dict(event.metrics),
                updated_at=now,
            )
        )
    else:
        trial.epoch, trial.epochs = event.epoch, event.epochs
        trial.metrics = dict(event.metrics)
        trial.updated_at = now
