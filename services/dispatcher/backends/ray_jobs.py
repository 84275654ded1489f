"""RayJobsBackend: runs a job's entrypoint on an existing Ray cluster through the Ray Jobs API.

The submission id is the run's handle and idempotency key: ``<job id>`` for attempt 1 and
``<job id>-attempt-<n>`` for later attempts (Ray never reuses a submission id, and attempt
n+1 must be a new run). Submitting an id that already exists counts as launched.

The job's environment (API URL, job id and token, attempt, artifacts and models URIs, S3
endpoint…) travels in the submission's ``runtime_env.env_vars``; with ``ship_code`` the
``trainforge`` and ``jobs`` packages travel as ``py_modules``, so a cluster without the
trainforge image can still import them. Ray applies the job's runtime_env to the entrypoint
and to every worker it starts (the Ray Train workers included).

Ray Jobs has no deadline of its own, so the backend keeps the spec's: the submission's metadata
holds ``timeout_s``, and a poll past ``start_time + timeout_s`` stops the Ray job and reports
the run FAILED (:data:`~services.dispatcher.backends.base.TIMED_OUT`), on this dispatcher or on
the next one after a restart.
"""

from __future__ import annotations

import importlib.util
import logging
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.dispatcher.backends.base import (
    TIMED_OUT,
    BackendState,
    BackendStatus,
    LaunchRequest,
)
from trainforge.errors import BackendError

log = logging.getLogger(__name__)

_STATES = {
    "PENDING": BackendState.PENDING,
    "RUNNING": BackendState.RUNNING,
    "SUCCEEDED": BackendState.SUCCEEDED,
    "FAILED": BackendState.FAILED,
    "STOPPED": BackendState.STOPPED,
}


#: The submission metadata key that holds the run's ``timeout_s``.
TIMEOUT_KEY = "trainforge_timeout_s"

#: The packages a job imports, shipped with it when the cluster may not have them.
SHIPPED = ("trainforge", "jobs")


def _package_folder(name: str) -> Path | None:
    """Where an installed package's files are. Found, not imported: the dispatcher runs none of
    the job code it ships (the import contract in pyproject.toml)."""
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


def backend_state(status: str) -> BackendState:
    """Ray's ``JobStatus`` (by value) as a :class:`BackendState`; unknown values → UNKNOWN."""
    return _STATES.get(str(status), BackendState.UNKNOWN)


def submission_id(job_id: str, attempt: int) -> str:
    """The Ray Jobs submission id of one attempt of a job."""
    return job_id if attempt <= 1 else f"{job_id}-attempt-{attempt}"


class RayJobsBackend:
    """Launches entrypoints as Ray Jobs on the cluster whose dashboard is at ``address``.

    Args:
        address: the Ray dashboard / Jobs API URL, e.g. ``http://raycluster-head:8265``.
        env: extra environment for every job (S3 credentials, RAY_AUTH_TOKEN…), under the
            request's own variables.
        ship_code: upload the ``trainforge`` and ``jobs`` packages with each job (turn off when
            the cluster runs the trainforge training image).
        headers: extra HTTP headers for the Jobs API (e.g. an auth proxy's).
    """

    name = "ray"
    private_env = False  # runtime_env is readable through the Jobs API

    def __init__(
        self,
        address: str,
        *,
        env: Mapping[str, str] | None = None,
        ship_code: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.address = address
        self.env = dict(env or {})
        self.ship_code = ship_code
        self.headers = dict(headers or {})
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            try:
                self._client = JobSubmissionClient(self.address, headers=self.headers or None)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise BackendError(f"cannot reach the Ray Jobs API at {self.address}: {exc}"
                                   ) from None
        return self._client

    def runtime_env(self, request: LaunchRequest) -> dict[str, Any]:
        """What Ray sets up for the entrypoint and its workers."""
        env: dict[str, Any] = {"env_vars": {**self.env, **request.env}}
        if self.ship_code:
            env["py_modules"] = [str(folder) for folder in map(_package_folder, SHIPPED)
                                 if folder is not None]
        return env

    def launch(self, request: LaunchRequest) -> str:
        """Submit the attempt (idempotent by submission id); returns the submission id.

        Raises:
            BackendError: the Jobs API refused or could not be reached.
        """
        handle = submission_id(request.job_id, request.attempt)
        try:
            self.client.submit_job(
                entrypoint=shlex.join(request.command),
                submission_id=handle,
                runtime_env=self.runtime_env(request),
                metadata={"trainforge_job_id": request.job_id,
                          "trainforge_attempt": str(request.attempt),
                          "trainforge_team": request.team,
                          TIMEOUT_KEY: str(request.timeout_s)},
            )
        except RuntimeError as exc:
            if "already exists" in str(exc):
                log.info("launch %s: already submitted", handle)
                return handle
            raise BackendError(f"Ray Jobs API refused {handle}: {exc}") from None
        except OSError as exc:  # requests' connection errors
            raise BackendError(f"cannot reach the Ray Jobs API at {self.address}: {exc}"
                               ) from None
        log.info("submitted %s to %s: %s", handle, self.address, shlex.join(request.command))
        return handle

    def poll(self, handle: str) -> BackendStatus:
        try:
            info = self.client.get_job_info(handle)
        except RuntimeError as exc:
            if _not_found(exc):
                return BackendStatus(BackendState.UNKNOWN, f"no Ray job {handle}")
            raise BackendError(f"polling {handle}: {exc}") from None
        state = backend_state(info.status)
        if _past_deadline(info, now_ms=time.time() * 1000):
            if state in (BackendState.PENDING, BackendState.RUNNING):
                log.warning("stopping %s: it ran past its timeout", handle)
                self.cancel(handle)
                return BackendStatus(BackendState.FAILED, TIMED_OUT)
            if state is BackendState.STOPPED:  # stopped here at its deadline, polled again
                return BackendStatus(BackendState.FAILED, TIMED_OUT)
        return BackendStatus(state, info.message or "")

    def cancel(self, handle: str) -> None:
        """Stop the Ray job (SIGTERM, then SIGKILL after Ray's grace period)."""
        try:
            self.client.stop_job(handle)
        except RuntimeError as exc:
            if not _not_found(exc):
                raise BackendError(f"stopping {handle}: {exc}") from None

    def logs(self, handle: str) -> str:
        """The entrypoint's output as Ray kept it ("" for an unknown handle)."""
        try:
            return str(self.client.get_job_logs(handle))
        except RuntimeError as exc:
            if _not_found(exc):
                return ""
            raise BackendError(f"reading logs of {handle}: {exc}") from None


def _past_deadline(info: Any, now_ms: float) -> bool:
    """Whether the Ray job ran (or, stopped, had run) past the ``timeout_s`` it was submitted
    with. Submissions without one (made by something else) have no deadline here."""
    try:
        timeout_s = int((info.metadata or {})[TIMEOUT_KEY])
    except (KeyError, TypeError, ValueError):
        return False
    if not info.start_time:
        return False
    until = info.end_time or now_ms
    return bool(until - info.start_time >= timeout_s * 1000)


def _not_found(exc: Exception) -> bool:
    text = str(exc)
    return "status code 404" in text or "does not exist" in text
