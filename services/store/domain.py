"""Plain objects the store hands out; rows (tables.py) never leave services.store."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from trainforge.spec import JobKind
from trainforge.states import JobState


@dataclass(frozen=True, slots=True)
class Progress:
    epoch: int
    epochs: int


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Trial:
    """Latest epoch and metrics of one sweep trial."""

    trial: str
    epoch: int
    epochs: int
    metrics: dict[str, float]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    team: str
    kind: JobKind
    name: str
    state: JobState
    spec_uri: str
    spec_sha256: str
    gpus: int
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: Progress | None
    metrics: dict[str, float]
    error: JobError | None
    #: Sweep trials (empty for other kinds, or when not loaded).
    trials: tuple[Trial, ...] = ()
    #: The schedule that submitted the job (None for jobs submitted through the API).
    schedule_id: str | None = None
    #: The stopped job this one continues (POST /v1/jobs/{id}/resume), if any.
    resumed_from: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    """What the API hands the store to create a job (the spec is already written)."""

    id: str
    team: str
    kind: JobKind
    name: str
    spec_uri: str
    spec_sha256: str
    gpus: int
    max_attempts: int
    schedule_id: str | None = None
    #: A resumed job: the job it continues, and where that one's checkpoint stands (the
    #: epochs it trained, of the new job's total) as the new job's starting progress.
    resumed_from: str | None = None
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    job_id: str
    time: datetime
    type: str
    from_state: JobState | None
    to_state: JobState | None
    reason: str
    attempt: int | None
    trial: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: str
    number: int
    backend: str
    handle: str | None
    claimed_by: str
    claimed_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    team: str
    description: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class IdempotentResponse:
    """A stored first response to an Idempotency-Key."""

    job_id: str
    request_sha256: str
    status_code: int
    response: dict[str, Any]


class RunOutcome(StrEnum):
    """What one fire time of a schedule did."""

    SUBMITTED = "submitted"  # a job was created
    SKIPPED = "skipped"  # the dataset had not changed since the last submitted run
    FAILED = "failed"  # no job: the dataset could not be read, a team limit, …


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    id: int
    schedule_id: str
    fire_time: datetime
    outcome: RunOutcome
    job_id: str | None
    message: str
    fingerprint: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    team: str
    name: str
    cron: str
    timezone: str
    #: The job template (a job spec as JSON).
    spec: dict[str, Any]
    only_if_dataset_changed: bool
    paused: bool
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime
    last_fire_at: datetime | None
    last_outcome: RunOutcome | None
    last_job_id: str | None
    #: Dataset fingerprint given to the last submitted job, and that run's fire time.
    dataset_fingerprint: str | None
    dataset_fingerprint_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewSchedule:
    """What the API hands the store to create a schedule (everything already validated)."""

    id: str
    team: str
    name: str
    cron: str
    timezone: str
    spec: dict[str, Any]
    only_if_dataset_changed: bool
    paused: bool


@dataclass(frozen=True, slots=True)
class NewWebhook:
    """What the API hands the store to create a subscription (URL already checked, secret
    already sealed)."""

    id: str
    team: str
    url: str
    events: tuple[str, ...]
    description: str
    secret_sealed: str


@dataclass(frozen=True, slots=True)
class Webhook:
    """A team's subscription (never its secret)."""

    id: str
    team: str
    url: str
    events: tuple[str, ...]
    description: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One outbox row: the event's id, type, time and object."""

    id: str
    team: str
    type: str
    time: datetime
    data: dict[str, Any]
    expand: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one subscription, as GET /v1/webhooks/{id}/deliveries shows it."""

    id: int
    webhook_id: str
    event_id: str
    event_type: str
    event_time: datetime
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeliveryTask:
    """A delivery a dispatcher has claimed for one attempt (number ``attempt``)."""

    delivery_id: int
    attempt: int
    webhook_id: str
    url: str
    secret_sealed: str
    event: WebhookEvent
