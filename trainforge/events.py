"""What a running job tells the API: the body of POST /internal/v1/jobs/{id}/events."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

#: :attr:`MessageEvent.data` key, true on a message a user watching the job must see (the
#: CLI's progress bar prints it above the bar): the job trains on the CPU, resumed a run,
#: skipped or failed an export format, the promotion verdict, a sweep's plan and best trial.
NOTICE = "notice"
#: :attr:`MessageEvent.data` keys of a sweep's plan notice: how many trials it runs and the
#: metric that ranks them (the CLI's bar shows "trial n of m, best <metric> so far").
SWEEP_TRIALS = "sweep_trials"
SWEEP_METRIC = "sweep_metric"


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProgressEvent(_Event):
    """One finished epoch (of the job, or of one sweep trial)."""

    type: Literal["progress"] = "progress"
    epoch: int = Field(ge=1)
    epochs: int = Field(ge=1)
    #: Ultralytics metric names: train/box_loss, metrics/mAP50(B), metrics/mAP50-95(B), lr/pg0,
    #: plus epoch_seconds and images_per_second.
    metrics: dict[str, float] = Field(default_factory=dict)
    trial: str | None = Field(None, max_length=128)
    attempt: int = Field(1, ge=1)


class StateEvent(_Event):
    """The job moved on by itself (RUNNING when training starts; SUCCEEDED/FAILED at the end)."""

    type: Literal["state"] = "state"
    state: Literal["RUNNING", "SUCCEEDED", "FAILED"]
    reason: str = Field("", max_length=4000)
    error_code: str | None = Field(None, max_length=64)


class MessageEvent(_Event):
    """A noteworthy step (dataset cached, resumed from epoch 3, model published…); with
    ``data[NOTICE]`` true, one the user must see."""

    type: Literal["message"] = "message"
    message: str = Field(max_length=4000)
    data: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


JobEvent = Annotated[ProgressEvent | StateEvent | MessageEvent, Field(discriminator="type")]
