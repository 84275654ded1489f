"""SQLAlchemy tables of the job store. Rows stay inside services.store (see domain.py).

Every table is also created by the Alembic migrations in ``migrations/versions``; a test
compares the two so they cannot drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: An auto-increment key: BIGINT on PostgreSQL, INTEGER on SQLite (only INTEGER PRIMARY KEY
#: is SQLite's rowid alias, which is what makes it auto-increment there).
SeqKey = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class JobRow(Base):
    """One submitted job. ``seq`` orders listings and cursors; ``id`` is the public name."""

    __tablename__ = "jobs"

    seq: Mapped[int] = mapped_column(SeqKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(16))
    spec_uri: Mapped[str] = mapped_column(Text)
    spec_sha256: Mapped[str] = mapped_column(String(64))
    gpus: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    retry_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    progress_epoch: Mapped[int | None] = mapped_column(Integer)
    progress_epochs: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any] | None]
    #: The schedule that submitted the job (no foreign key: the job outlives its schedule).
    schedule_id: Mapped[str | None] = mapped_column(String(40))
    #: The stopped job this one continues (POST /v1/jobs/{id}/resume). Unique: a job is
    #: resumed at most once, so its resumptions form a chain (resume the newest link).
    resumed_from: Mapped[str | None] = mapped_column(String(40))

    __table_args__ = (
        Index("ix_jobs_team_seq", "team", "seq"),
        Index("ix_jobs_team_state", "team", "state"),
        Index("ix_jobs_state_seq", "state", "seq"),
        Index("ix_jobs_resumed_from", "resumed_from", unique=True),
    )


class EventRow(Base):
    """One thing that happened to a job: a state change, a finished epoch, a message."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(SeqKey, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    time: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int | None] = mapped_column(Integer)
    trial: Mapped[str | None] = mapped_column(String(128))
    data: Mapped[dict[str, Any] | None]

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class AttemptRow(Base):
    """One launch of a job on a backend. ``handle`` is NULL until the launch is recorded."""

    __tablename__ = "job_attempts"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    backend: Mapped[str] = mapped_column(String(32))
    handle: Mapped[str | None] = mapped_column(Text)
    token_sha256: Mapped[str] = mapped_column(String(64))
    claimed_by: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime]
    launched_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)


class TrialRow(Base):
    """Latest epoch and metrics of one sweep trial."""

    __tablename__ = "job_trials"

    job_id: Mapped[str] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    trial: Mapped[str] = mapped_column(String(128), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class IdempotencyRow(Base):
    """The first response to an Idempotency-Key, replayed for retries of the same request."""

    __tablename__ = "idempotency_keys"

    team: Mapped[str] = mapped_column(String(63), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class ApiTokenRow(Base):
    """A bearer token bound to one team; only the SHA-256 of its secret part is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(63))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ScheduleRow(Base):
    """A job template re-submitted on a cron schedule (fired by the leading dispatcher)."""

    __tablename__ = "schedules"

    seq: Mapped[int] = mapped_column(SeqKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(63))
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    #: The job template: a validated job spec (trainforge/spec.py), as JSON.
    spec: Mapped[dict[str, Any]]
    only_if_dataset_changed: Mapped[bool]
    paused: Mapped[bool]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: The next fire time, UTC (computed in ``timezone``).
    next_fire_at: Mapped[datetime]
    last_fire_at: Mapped[datetime | None]
    last_outcome: Mapped[str | None] = mapped_column(String(16))
    last_job_id: Mapped[str | None] = mapped_column(String(40))
    #: Fingerprint of the dataset the last submitted job was given, and that run's fire time.
    dataset_fingerprint: Mapped[str | None] = mapped_column(String(64))
    dataset_fingerprint_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_schedules_team_seq", "team", "seq"),
        Index("ix_schedules_paused_next_fire_at", "paused", "next_fire_at"),
    )


class ScheduleRunRow(Base):
    """What one fire time of a schedule did: submitted a job, skipped, or failed.

    UNIQUE (schedule_id, fire_time) is what makes a fire time produce at most one job across
    dispatcher replicas and restarts: the row is inserted in the job's transaction.
    """

    __tablename__ = "schedule_runs"

    id: Mapped[int] = mapped_column(SeqKey, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_time: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    message: Mapped[str] = mapped_column(Text, default="")
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time"),
        Index("ix_schedule_runs_schedule_id_id", "schedule_id", "id"),
    )


class WebhookRow(Base):
    """A team's webhook subscription: where to POST which events, and its signing secret.

    The secret is stored sealed (services/webhooks/secrets.py: AES-GCM under a key derived
    from TRAINFORGE_SECRET_KEY), so the database alone does not reveal it.
    """

    __tablename__ = "webhooks"

    seq: Mapped[int] = mapped_column(SeqKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team: Mapped[str] = mapped_column(String(63))
    url: Mapped[str] = mapped_column(Text)
    #: Event types (trainforge/webhooks.py EventType), as a JSON list.
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text, default="")
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
    #: Set when a delivery failed every attempt: the subscription gets nothing more.
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_webhooks_team_seq", "team", "seq"),)


class WebhookEventRow(Base):
    """The outbox: one thing a team's tools may hear about, written in the transaction of the
    change that caused it (services/store/outbox.py).

    ``id`` is derived from what happened (the same job ending, alias move or publication always
    has the same id), so an event recorded twice, by two paths or after a crash, is one row.
    """

    __tablename__ = "webhook_events"

    seq: Mapped[int] = mapped_column(SeqKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime]
    #: The object the event is about (a job, a model version, an alias move…), as JSON.
    data: Mapped[dict[str, Any]]
    #: unconfirmed (an alias move the API has not confirmed yet), ready (to fan out to the
    #: team's subscriptions), fanned (deliveries created).
    state: Mapped[str] = mapped_column(String(16))
    #: A finished job: read its registry records (publication, promotion) before fanning out.
    expand: Mapped[bool]
    created_at: Mapped[datetime]

    __table_args__ = (Index("ix_webhook_events_state_seq", "state", "seq"),)


class WebhookDeliveryRow(Base):
    """One event for one subscription, and how its attempts went.

    ``next_attempt_at`` is when it is due; while a dispatcher sends it, it is that claim's
    lease (``claimed_by``), after which another dispatcher may send it again.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(SeqKey, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    #: pending, delivered, failed (every attempt failed), abandoned (its subscription was
    #: disabled meanwhile).
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    last_attempt_at: Mapped[datetime | None]
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        Index("ix_webhook_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
    )
