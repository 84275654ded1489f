"""The Backend interface the dispatcher drives."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from trainforge.spec import JobKind, Resources


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a backend needs to start one attempt of a job.

    ``job_id`` is the launch's idempotency key: launching the same job id twice must not start
    two runs (Ray Jobs: submission id; KubeRay: RayJob name; local: a pid file).
    """

    job_id: str
    kind: JobKind
    spec_uri: str
    attempt: int
    resources: Resources
    retries: int
    #: The run's wall-clock limit (the spec's ``timeout_minutes``): every backend stops the
    #: run past it and reports it FAILED (docs/operations.md, "Timeouts").
    timeout_s: int
    team: str
    env: dict[str, str] = field(default_factory=dict)
    #: Values only the run may see (the job token). Only a backend whose ``private_env`` is
    #: True gets any; the dispatcher hands the others' runs their secrets through the store.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def command(self) -> list[str]:
        return entrypoint_command(self.kind, self.spec_uri)


class BackendState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"  # the backend has no record of this launch


#: The message of a run that a backend stopped at its ``timeout_s``.
TIMED_OUT = "timed out (spec timeout_minutes)"


@dataclass(frozen=True)
class BackendStatus:
    state: BackendState
    message: str = ""


class Backend(Protocol):
    name: str
    #: Whether a run's environment is visible to the run alone (a local child process), as
    #: opposed to stored where others can read it (Ray job settings, a RayJob object).
    private_env: bool

    def launch(self, request: LaunchRequest) -> str:
        """Start the job (idempotent by job id); returns a handle to poll, cancel and read."""
        ...

    def poll(self, handle: str) -> BackendStatus: ...

    def cancel(self, handle: str) -> None:
        """Stop the run; cancelling a finished or unknown run is not an error."""
        ...

    def logs(self, handle: str) -> str:
        """What the backend kept of a run's output ("" when nothing): the dispatcher adds its
        tail to the failure of a run that died without reporting why."""
        ...


def entrypoint_command(kind: JobKind, spec_uri: str) -> list[str]:
    """The one command line every backend runs: ``python -m jobs.<kind> --spec URI``."""
    return ["python", "-m", f"jobs.{kind.value}", "--spec", spec_uri]
