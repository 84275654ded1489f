"""Best-effort progress reporting from a job entrypoint to the API.

A job must not die because the API is briefly unreachable, so posts are retried a few times
and then dropped with a warning; the dispatcher still learns the final outcome from the
backend's exit status.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Literal

import httpx
from pydantic import TypeAdapter

from trainforge.constants import ENV_API_URL, ENV_JOB_ID, ENV_JOB_SECRETS_URI, ENV_JOB_TOKEN
from trainforge.errors import TrainforgeError
from trainforge.events import NOTICE, JobEvent, MessageEvent, ProgressEvent, StateEvent

log = logging.getLogger(__name__)
_EVENT = TypeAdapter(JobEvent)


@functools.cache
def _stored_secrets(uri: str) -> dict[str, str]:
    from trainforge.storage import open_location

    try:
        store, key = open_location(uri)
        data = json.loads(store.get(key))
    except (TrainforgeError, ValueError) as exc:
        log.warning("cannot read the job's secrets at %s: %s; events will be refused", uri, exc)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _stored_secret(name: str) -> str | None:
    uri = os.environ.get(ENV_JOB_SECRETS_URI)
    return _stored_secrets(uri).get(name) if uri else None


class JobReporter:
    """Posts events for one job; a no-op when the job runs outside the service."""

    def __init__(self, api_url: str | None, job_id: str | None, token: str | None) -> None:
        self.api_url = api_url.rstrip("/") if api_url else None
        self.job_id = job_id
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.sent: list[JobEvent] = []

    @classmethod
    def from_env(cls) -> JobReporter:
        """The reporter of the job this process belongs to (a no-op outside the service).

        The job token is in the environment, or, on backends whose environment others can
        read, in the store object that ``TRAINFORGE_JOB_SECRETS_URI`` names.
        """
        return cls(os.environ.get(ENV_API_URL), os.environ.get(ENV_JOB_ID),
                   os.environ.get(ENV_JOB_TOKEN) or _stored_secret(ENV_JOB_TOKEN))

    @property
    def enabled(self) -> bool:
        return bool(self.api_url and self.job_id)

    def send(self, event: JobEvent, *, attempts: int = 4) -> bool:
        self.sent.append(event)
        if not self.enabled:
            return False
        url = f"{self.api_url}/internal/v1/jobs/{self.job_id}/events"
        body = _EVENT.dump_python(event, mode="json")
        for attempt in range(attempts):
            try:
                resp = httpx.post(url, json=body, headers=self._headers, timeout=10)
                if resp.status_code < 500:
                    if resp.status_code >= 400:
                        log.warning("API refused event %s: %s %s", event.type,
                                    resp.status_code, resp.text[:300])
                    return resp.is_success
            except httpx.HTTPError as exc:
                log.debug("posting event failed (%s), retrying", exc)
            time.sleep(min(2**attempt * 0.25, 4))
        log.warning("could not deliver %s event to %s; continuing", event.type, url)
        return False

    def progress(self, epoch: int, epochs: int, metrics: dict[str, float], *,
                 trial: str | None = None, attempt: int = 1) -> None:
        self.send(ProgressEvent(epoch=epoch, epochs=epochs, metrics=metrics, trial=trial,
                                attempt=attempt))

    def state(
        self,
        state: Literal["RUNNING", "SUCCEEDED", "FAILED"],
        reason: str = "",
        error_code: str | None = None,
    ) -> None:
        self.send(StateEvent(state=state, reason=reason, error_code=error_code))

    def message(self, message: str, **data: str | int | float | bool | None) -> None:
        log.info(message)
        self.send(MessageEvent(message=message, data=data))

    def notice(self, message: str, **data: str | int | float | bool | None) -> None:
        """A message the user watching the job must see (``trainforge jobs wait`` prints it
        above the progress bar; trainforge/events.py ``NOTICE``)."""
        self.message(message, **data, **{NOTICE: True})
