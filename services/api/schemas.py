"""Wire schemas: what clients send and receive. Built from domain objects, never from rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.store.domain import Event, Job
from trainforge.spec import JobKind, JobSpec
from trainforge.states import JobState


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class JobSubmission(BaseModel):
    """``POST /v1/jobs`` body. Only ``spec``: ids, teams and states are the server's."""

    model_config = ConfigDict(extra="forbid")

    spec: JobSpec


class _Query(BaseModel):
    """Query parameters: unknown ones are refused (a typo must not silently match all)."""

    model_config = ConfigDict(extra="forbid")


class JobListQuery(_Query):
    state: list[JobState] = Field(default_factory=list, description="repeat to match several")
    kind: JobKind | None = None
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200, description="next_cursor of a page")


class EventQuery(_Query):
    after: int = Field(0, ge=0, le=2**62, description="only events after this id")
    limit: int = Field(500, ge=1, le=1000)


class LogQuery(_Query):
    attempt: int | None = Field(None, ge=1, le=1000, description="default: the latest")
    follow: bool = Field(False, description="stream the log as it grows, until the job ends")


class DownloadQuery(_Query):
    expires: int = Field(ge=0, le=2**62)
    signature: str = Field(max_length=128)


class ProgressOut(_Out):
    epoch: int
    epochs: int


class ErrorOut(_Out):
    code: str
    message: str


class TrialOut(_Out):
    trial: str
    epoch: int
    epochs: int
    metrics: dict[str, float]
    updated_at: datetime


class JobOut(_Out):
    """A job as clients see it."""

    id: str
    team: str
    kind: JobKind
    name: str
    state: JobState
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int = Field(description="attempts launched so far")
    max_attempts: int = Field(description="1 + the spec's retries")
    progress: ProgressOut | None = Field(description="latest finished epoch")
    metrics: dict[str, float] = Field(description="metrics of the latest finished epoch")
    error: ErrorOut | None = Field(description="why the job failed (or why an attempt did)")
    trials: list[TrialOut] | None = Field(description="sweeps: latest epoch/metrics per trial")
    spec_uri: str

    @classmethod
    def from_domain(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            team=job.team,
            kind=job.kind,
            name=job.name,
            state=job.state,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            progress=ProgressOut(epoch=job.progress.epoch, epochs=job.progress.epochs)
            if job.progress
            else None,
            metrics=job.metrics,
            error=ErrorOut(code=job.error.code, message=job.error.message) if job.error else None,
            trials=[
                TrialOut(trial=t.trial, epoch=t.epoch, epochs=t.epochs, metrics=t.metrics,
                         updated_at=t.updated_at)
                for t in job.trials
            ]
            if job.kind is JobKind.SWEEP
            else None,
            spec_uri=job.spec_uri,
        )


class JobPage(_Out):
    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class EventOut(_Out):
    id: int
    time: datetime
    type: Literal["state", "progress", "message"]
    from_state: JobState | None
    to_state: JobState | None
    reason: str
    attempt: int | None
    trial: str | None
    data: dict[str, Any]

    @classmethod
    def from_domain(cls, event: Event) -> EventOut:
        return cls(
            id=event.id,
            time=event.time,
            type=event.type,
            from_state=event.from_state,
            to_state=event.to_state,
            reason=event.reason,
            attempt=event.attempt,
            trial=event.trial,
            data=event.data,
        )


class EventPage(_Out):
    items: list[EventOut]
    next_after: int = Field(description="pass as ?after= to get only newer events")


class ArtifactOut(_Out):
    name: str = Field(description="path under the job's prefix, e.g. train/best.pt")
    size: int
    sha256: str
    url: str = Field(description="download URL (presigned or API-served), valid ≤ 15 min")
    expires_at: datetime


class ArtifactList(_Out):
    items: list[ArtifactOut]


class DatasetValidationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str = Field(min_length=1, max_length=2048, description="s3://bucket/prefix/ …")


class DatasetValidation(_Out):
    ok: bool
    report: dict[str, Any]


class EventAccepted(_Out):
    accepted: bool = True


class Health(_Out):
    status: Literal["ok"] = "ok"


class Readiness(_Out):
    status: Literal["ok"] = "ok"
    checks: dict[str, str]


class FieldProblem(_Out):
    path: str
    message: str


class Problem(_Out):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="stable machine-readable error code")
    instance: str | None = None
    errors: list[FieldProblem] | None = None
    checks: dict[str, str] | None = None
