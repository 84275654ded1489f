"""Wire schemas: what clients send and receive. Built from domain objects, never from rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from services.store.cron import MIN_INTERVAL, check_cron, check_timezone
from services.store.domain import Event, Job, RunOutcome, Schedule, ScheduleRun
from trainforge.spec import MAX_EPOCHS, NAME_PATTERN, JobKind, JobSpec, PromotePolicy
from trainforge.states import JobState


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class JobSubmission(BaseModel):
    """``POST /v1/jobs`` body. Only ``spec``: ids, teams and states are the server's."""

    model_config = ConfigDict(extra="forbid")

    spec: JobSpec


class JobResume(BaseModel):
    """``POST /v1/jobs/{id}/resume`` body (optional): what may change when a job continues."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(
        None, ge=1, le=MAX_EPOCHS,
        description="the new total of epochs (default: the stopped job's train.epochs); at "
        "least the epochs it already trained. Raising it trains that many more, on a "
        "learning-rate schedule recomputed for the new total (docs/training.md)")


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
    schedule_id: str | None = Field(description="the schedule that submitted the job, if any")
    resumed_from: str | None = Field(
        description="the stopped job this one continues (POST /v1/jobs/{id}/resume), if any")

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
            schedule_id=job.schedule_id,
            resumed_from=job.resumed_from,
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
        # Same field names as the domain object: copied by name, so a new field needs no mapping.
        return cls.model_validate(event, from_attributes=True)


class EventPage(_Out):
    items: list[EventOut]
    next_after: int = Field(description="pass as ?after= to get only newer events")


class ArtifactOut(_Out):
    name: str = Field(description="a job's: its path under the job's prefix, e.g. "
                      "train/best.pt; a model version's: its file name, e.g. model.onnx")
    size: int
    sha256: str
    url: str = Field(description="download URL (presigned or API-served), valid ≤ 15 min")
    expires_at: datetime


class ArtifactList(_Out):
    items: list[ArtifactOut]
    complete: bool = Field(
        description="true once the job SUCCEEDED and its run exited: these are all its "
        "artifacts, final. False while it runs, and for a failed or cancelled job: what it "
        "wrote before it stopped (checkpoints, logs), outputs missing or partial"
    )


_CRON_DESCRIPTION = (
    "5-field cron expression (minute hour day-of-month month day-of-week), evaluated on the "
    f"wall clock of `timezone`; at most one fire every {MIN_INTERVAL.seconds // 60} minutes"
)
_TIMEZONE_DESCRIPTION = "IANA time zone of the cron expression, e.g. Europe/Berlin"
_CHANGED_DESCRIPTION = (
    "skip a fire time (a `skipped` run) when the dataset's fingerprint is the same as for the "
    "last submitted job"
)


def _checked(check: Callable[[str], str], error_type: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        # A custom error: its message is ours as it is, without pydantic's "Value error, ".
        raise PydanticCustomError(error_type, "{detail}", {"detail": str(exc)}) from None


class _ScheduleFields(BaseModel):
    """Validation shared by the create and update bodies (the spec validates itself)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("cron", check_fields=False)
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _checked(check_cron, "cron_invalid", value)

    @field_validator("timezone", check_fields=False)
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return _checked(check_timezone, "timezone_invalid", value)


class ScheduleCreate(_ScheduleFields):
    """``POST /v1/schedules`` body."""

    name: str | None = Field(None, pattern=NAME_PATTERN, description="default: spec.name")
    cron: str = Field(max_length=255, description=_CRON_DESCRIPTION)
    timezone: str = Field("UTC", max_length=64, description=_TIMEZONE_DESCRIPTION)
    only_if_dataset_changed: bool = Field(True, description=_CHANGED_DESCRIPTION)
    paused: bool = Field(False, description="create it paused (it fires once resumed)")
    spec: JobSpec = Field(description="the job template: a job spec, as POST /v1/jobs takes it")


class ScheduleUpdate(_ScheduleFields):
    """``PATCH /v1/schedules/{id}`` body: the fields to change. A new cron or time zone, or a
    resume, computes the next fire time from now."""

    name: str | None = Field(None, pattern=NAME_PATTERN)
    cron: str | None = Field(None, max_length=255, description=_CRON_DESCRIPTION)
    timezone: str | None = Field(None, max_length=64, description=_TIMEZONE_DESCRIPTION)
    only_if_dataset_changed: bool | None = Field(None, description=_CHANGED_DESCRIPTION)
    paused: bool | None = Field(None, description="pause (true) or resume (false)")
    spec: JobSpec | None = Field(None, description="a new job template")


class ScheduleListQuery(_Query):
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200, description="next_cursor of a page")


class ScheduleRunOut(_Out):
    """What one fire time did: submitted a job, or why not."""

    id: int
    fire_time: datetime = Field(description="the cron time this run is for (UTC)")
    outcome: RunOutcome
    job_id: str | None = Field(description="the job submitted (outcome submitted)")
    message: str
    fingerprint: str | None = Field(description="the dataset fingerprint, when it was computed")
    created_at: datetime
    promotion: str | None = Field(
        None, description="the job's promotion verdict once it has one (a template with a "
        "promote section): promoted vX → vY (…) or kept vX: <the rule that failed>")

    @classmethod
    def from_domain(cls, run: ScheduleRun, promotion: str | None = None) -> ScheduleRunOut:
        out = cls.model_validate(run, from_attributes=True)  # same field names, as EventOut
        return out.model_copy(update={"promotion": promotion}) if promotion else out


class ScheduleRunPage(_Out):
    items: list[ScheduleRunOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class ScheduleOut(_Out):
    """A schedule as clients see it."""

    id: str
    team: str
    name: str
    cron: str
    timezone: str
    only_if_dataset_changed: bool
    paused: bool
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None = Field(description="next fire time, UTC (null when paused)")
    last_fire_at: datetime | None = Field(description="fire time of the latest run")
    last_outcome: RunOutcome | None
    last_job_id: str | None = Field(description="the job the latest submitted run created")
    dataset_fingerprint: str | None = Field(
        description="dataset fingerprint of the latest submitted job (what unchanged means)"
    )
    spec: dict[str, Any] = Field(description="the job template")

    @classmethod
    def from_domain(cls, schedule: Schedule) -> ScheduleOut:
        return cls(
            id=schedule.id,
            team=schedule.team,
            name=schedule.name,
            cron=schedule.cron,
            timezone=schedule.timezone,
            only_if_dataset_changed=schedule.only_if_dataset_changed,
            paused=schedule.paused,
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
            next_fire_at=None if schedule.paused else schedule.next_fire_at,
            last_fire_at=schedule.last_fire_at,
            last_outcome=schedule.last_outcome,
            last_job_id=schedule.last_job_id,
            dataset_fingerprint=schedule.dataset_fingerprint,
            spec=schedule.spec,
        )


class ScheduleDetail(ScheduleOut):
    """A schedule with its latest runs."""

    recent_runs: list[ScheduleRunOut] = Field(description="the latest runs, newest first")


class SchedulePage(_Out):
    items: list[ScheduleOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


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


# --- /v1/models: the team's model registry --------------------------------------------------

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ModelSummary(_Out):
    name: str
    versions: int = Field(description="published versions")
    latest: str | None = Field(
        description="the newest trained version (`@latest`; an export job's version never is)"
    )
    aliases: dict[str, str] = Field(description="alias → version")


class ModelList(_Out):
    items: list[ModelSummary]


class AliasMoveOut(_Out):
    """One move of an alias: from then on, ``alias`` means ``version``."""

    model: str
    alias: str
    seq: int = Field(description="the move's number in the alias's history (1 = first)")
    version: str
    previous: str | None
    actor: str = Field(description="who moved it: a job, or a team through the API or CLI")
    reason: str
    moved_at: datetime
    details: dict[str, Any] = Field(description="the policy's figures, when a job promoted")


class PromotionOut(_Out):
    alias: str
    champion: str | None = Field(description="the alias's version the job compared against")
    outcome: Literal["promoted", "kept", "conflict"]
    summary: str
    decided_at: datetime


class ModelFileOut(_Out):
    """A published file of a version, as its manifest lists it."""

    name: str = Field(description="file name inside the version, e.g. model.onnx")
    size: int
    sha256: str


class VersionOut(_Out):
    version: str
    created_at: datetime | None
    source_job_id: str | None
    metrics: dict[str, float | None] = Field(description="held-out scores at publication")
    split: str | None = Field(description="the split those scores are on (test, or val)")
    dataset_fingerprint: str | None
    gates: dict[str, str | None] = Field(description="export format → gate status")
    artifacts: list[str] = Field(description="the names of `files`")
    files: list[ModelFileOut] = Field(
        description="the published files with size and sha256 (download them through "
        "GET /v1/models/{name}/versions/{ref}/artifacts)")
    aliases: list[str] = Field(description="aliases pointing at this version")
    promotion: PromotionOut | None = Field(description="what the job's promote step decided")


class ModelVersionDetail(_Out):
    """``GET /v1/models/{name}/versions/{ref}``: one version, its ref resolved once."""

    name: str
    ref: str = Field(description="what was asked for: a version id, an alias or `latest`")
    version: str = Field(description="the version `ref` resolved to; every field is of it")
    created_at: datetime | None
    source_job_id: str | None = Field(description="the job that published it")
    base: str | None = Field(
        description="the model.base it was fine-tuned from (a stock name, a URI, or "
        "registry://NAME@REF, whose version tells the lineage)")
    dataset_uri: str | None = Field(description="the dataset it was trained or exported on")
    dataset_fingerprint: str | None
    metrics: dict[str, float | None] = Field(description="held-out scores at publication")
    split: str | None = Field(description="the split those scores are on (test, or val)")
    evaluation: dict[str, Any] | None = Field(
        description="the held-out evaluation: split, metrics, per_class, note")
    gates: dict[str, dict[str, Any]] = Field(
        description="export format → its gate: status, mAP delta, latency, reason")
    class_names: dict[str, str] | list[str] | None
    input_shape: list[int] | None = Field(
        description="[batch, channels, height, width] the exports take")
    files: list[ModelFileOut] = Field(description="the published files (the manifest's list)")
    aliases: list[str] = Field(description="aliases pointing at this version now")
    promotion: PromotionOut | None = Field(description="what the job's promote step decided")
    manifest: dict[str, Any] = Field(description="manifest.json as published (every field)")


class ModelArtifactList(_Out):
    """``GET /v1/models/{name}/versions/{ref}/artifacts``: every link is of ``version``."""

    model: str
    version: str = Field(description="the version the ref resolved to, once for every link")
    items: list[ArtifactOut] = Field(description="manifest.json and every file it lists")


class ModelDetail(_Out):
    name: str
    versions: list[VersionOut]
    aliases: dict[str, AliasMoveOut] = Field(description="alias → its latest move")
    history: list[AliasMoveOut] = Field(description="every alias move, oldest first")


class PromoteRequest(BaseModel):
    """``POST /v1/models/{name}/aliases/{alias}``: point an alias at a version (promotion or
    rollback)."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=VERSION_PATTERN, description="a version id, or another alias")
    reason: str = Field("", max_length=500, description="why (kept in the alias's history)")
    expected_version: str | None = Field(
        None, max_length=128,
        description="move only if the alias points at this version now (\"\" = only if "
        "unset): a safe compare-and-set for tools")


class CompareRequest(BaseModel):
    """``POST /v1/models/{name}/compare``: two versions side by side, and the verdict the
    promotion policy would give."""

    model_config = ConfigDict(extra="forbid")

    challenger: str = Field(pattern=VERSION_PATTERN, description="version or alias")
    champion: str = Field("champion", pattern=VERSION_PATTERN, description="version or alias")
    policy: PromotePolicy = Field(default_factory=PromotePolicy)


class Comparison(_Out):
    """comparison.json: both versions' held-out scores, their deltas and the verdict."""

    model: str
    challenger: dict[str, Any]
    champion: dict[str, Any]
    deltas: dict[str, float | None]
    per_class: list[dict[str, Any]]
    dataset: dict[str, Any]
    source: str
    verdict: dict[str, Any]
