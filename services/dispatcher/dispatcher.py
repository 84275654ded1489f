"""The dispatcher loop: claim queued jobs, launch them, poll them, cancel them.

Crash safety rests on three facts (details in services/store/dispatch.py):

- a claim is committed (job STARTING, attempt with NULL handle) before the backend is called,
  so a job is never launched without a record of it;
- ``Backend.launch`` is idempotent by (job id, attempt), so calling it again after a crash
  returns the run the first call started instead of starting a second one;
- every later step reads its work from the database, so a fresh dispatcher picks up exactly
  where a dead one stopped.

Each loop also fires due schedules, on the one dispatcher that leads scheduling
(services/dispatcher/scheduler.py), before claiming, so a fired job is claimed in the same loop.
Webhooks are delivered beside the loop, by a relay in a thread of its own
(services/dispatcher/webhook_relay.py): a slow receiver never holds up a job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from services.dispatcher.backends.base import Backend, BackendState, LaunchRequest
from services.dispatcher.metrics import DISPATCHER_ERRORS, LAST_LOOP
from services.dispatcher.scheduler import Scheduler, default_limits, no_access
from services.dispatcher.webhook_relay import WebhookRelay
from services.store import dispatch
from services.store.clock import utcnow
from services.store.db import Database
from services.store.dispatch import Assignment
from services.store.settings import TeamLimits
from services.store.tokens import job_token, sha256_hex
from trainforge.access import AccessRules
from trainforge.constants import (
    ENV_API_URL,
    ENV_ARTIFACTS_URI,
    ENV_ATTEMPT,
    ENV_JOB_ACCESS,
    ENV_JOB_ID,
    ENV_JOB_SECRETS_URI,
    ENV_JOB_TEAM,
    ENV_JOB_TOKEN,
    ENV_MODELS_URI,
    ENV_S3_ENDPOINT_URL,
    ENV_SPEC_SHA256,
)
from trainforge.errors import SpecTampered, StorageError
from trainforge.joblog import strip_ansi
from trainforge.layout import attempt_secrets_key
from trainforge.preflight import LocalMachine
from trainforge.spec import load_spec
from trainforge.storage import ObjectStore, join_key, open_location

log = logging.getLogger(__name__)

#: Launch failures of one attempt after which it counts as a failed attempt.
MAX_LAUNCH_FAILURES = 5
#: Seconds between loops while a run is being stopped: its exit is settled (CANCELLED) this
#: soon after it happens, whatever the configured interval.
STOPPING_POLL_S = 0.25


@dataclass(frozen=True)
class DispatcherConfig:
    """What a dispatcher needs besides its database and backend."""

    api_url: str
    secret_key: bytes
    artifacts_uri: str
    models_uri: str
    s3_endpoint_url: str | None = None
    batch_size: int = 8
    max_active: int | None = None
    launch_grace: timedelta = timedelta(seconds=60)
    retry_delay: timedelta = timedelta(seconds=10)
    owner: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )
    #: Team → its limits, for the jobs schedules submit (the API's submissions use the same).
    limits_for: Callable[[str], TeamLimits] = default_limits
    #: Team → what its jobs may read (the storage access policy); checked when a schedule
    #: fires and handed to every job, which checks again before it reads anything.
    access_for: Callable[[str], AccessRules] = no_access
    #: The machine jobs run on when it is this one (embedded): the jobs schedules submit are
    #: checked against its files, as the API's submissions are.
    machine: LocalMachine | None = None


class Dispatcher:
    """Moves jobs from QUEUED to a terminal state on one backend.

    Args:
        db: the job store.
        backend: where runs happen.
        config: see :class:`DispatcherConfig`.
        fault: test hook called at named points ("after_claim", "after_launch",
            "after_record", "schedule_fired"); a crash-injection test raises or kills the
            process there.
        clock: the current time, for firing schedules (tests pass a controllable one).
        fingerprint: dataset URI → fingerprint, for schedules that run only on new data;
            default: the scheduler's own cache (services/dispatcher/scheduler.py).
        relay: the webhook relay :meth:`run` runs beside the loop (None: no webhooks).
    """

    def __init__(
        self,
        db: Database,
        backend: Backend,
        config: DispatcherConfig,
        *,
        fault: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        fingerprint: Callable[[str], str] | None = None,
        relay: WebhookRelay | None = None,
    ) -> None:
        self.db = db
        self.relay = relay
        self.backend = backend
        self.config = config
        self._fault = fault or (lambda point: None)
        self._launch_failures: dict[tuple[str, int], int] = {}
        self._wakeup = threading.Event()
        #: Whether the last loop asked a run to stop that has not exited yet.
        self._stopping = False
        self.scheduler = Scheduler(
            db, artifacts_uri=config.artifacts_uri, owner=config.owner,
            limits_for=config.limits_for, access_for=config.access_for,
            machine=config.machine, clock=clock, fingerprint=fingerprint,
            fault=self._fault,
        )

    @property
    def is_leader(self) -> bool:
        """Whether this dispatcher fires schedules (as of its last loop)."""
        return self.scheduler.leadership.leading

    # --- one loop --------------------------------------------------------------------------

    def run_once(self) -> None:
        """Recover, fire schedules, claim and launch, cancel, poll: one pass over the work."""
        self._recover()
        self._fire_schedules()
        self._claim_and_launch()
        self._cancel_and_poll()
        LAST_LOOP.set_to_current_time()

    def run(self, stop: threading.Event, interval_s: float = 2.0) -> None:
        """Loop until ``stop`` is set; errors of one pass are logged and counted, not fatal.

        The next pass comes after ``interval_s``, or at once when :meth:`wake` is called, or
        after :data:`STOPPING_POLL_S` while a cancelled run is stopping. To stop the loop at
        once, set ``stop`` and then call :meth:`wake`.
        """
        log.info("dispatcher %s started on backend %s", self.config.owner, self.backend.name)
        relay = None
        if self.relay is not None:
            relay = threading.Thread(target=self.relay.run, args=(stop,), name="webhook-relay",
                                     daemon=True)
            relay.start()
        try:
            while not stop.is_set():
                self._wakeup.clear()
                try:
                    self.run_once()
                except Exception:
                    DISPATCHER_ERRORS.labels(backend=self.backend.name, operation="loop").inc()
                    log.exception("dispatcher loop failed; retrying in %.1fs", interval_s)
                if not stop.is_set():
                    self._wakeup.wait(min(interval_s, STOPPING_POLL_S) if self._stopping
                                      else interval_s)
        finally:
            self.close()
            if relay is not None:
                relay.join(timeout=30)
        log.info("dispatcher %s stopped", self.config.owner)

    def wake(self) -> None:
        """Run the next pass now (a cancel was requested in this process: ``trainforge
        serve``'s API), instead of after the loop's interval."""
        self._wakeup.set()

    def close(self) -> None:
        """Give up scheduling leadership at once (another dispatcher takes over)."""
        self.scheduler.close()

    # --- steps -----------------------------------------------------------------------------

    def _token_sha(self, job_id: str, attempt: int) -> str:
        return sha256_hex(job_token(self.config.secret_key, job_id, attempt))

    def _fire_schedules(self) -> None:
        # Not fatal to the rest of the loop: jobs keep moving while schedules cannot fire.
        try:
            self.scheduler.run_once()
        except Exception:
            DISPATCHER_ERRORS.labels(backend=self.backend.name, operation="schedules").inc()
            log.exception("firing schedules failed; retrying on the next loop")

    def _max_running(self, team: str) -> int | None:
        return self.config.limits_for(team).max_running_jobs

    def _claim_and_launch(self) -> None:
        with self.db.transaction() as session:
            # max_active is applied inside claim(), under its lock: counted here, two replicas
            # could both see room for the same last slot.
            claimed = dispatch.claim(
                session,
                owner=self.config.owner,
                backend=self.backend.name,
                limit=self.config.batch_size,
                token_sha256=self._token_sha,
                max_active=self.config.max_active,
                max_running=self._max_running,
            )
        self._fault("after_claim")
        for assignment in claimed:
            self._launch(assignment)

    def _recover(self) -> None:
        with self.db.transaction() as session:
            stranded = dispatch.unlaunched(
                session, owner=self.config.owner, grace=self.config.launch_grace
            )
        for assignment in stranded:
            log.warning(
                "job %s attempt %d was claimed by %s but its launch was never recorded; "
                "launching again (the backend returns the existing run if there is one)",
                assignment.job.id, assignment.attempt.number, assignment.attempt.claimed_by,
            )
            self._launch(assignment)

    def _request(self, assignment: Assignment) -> LaunchRequest:
        """What the backend needs for one attempt; the job gets only what it needs.

        No credentials of the dispatcher travel with the request: object-store credentials
        come from where the job runs (the local backend's own environment, the Ray nodes', or
        the RayJob's Secrets and service account), and the job token goes through the
        backend's private environment or, where there is none, through the artifacts store.

        Raises:
            SpecTampered: spec.json is not what the API wrote.
        """
        job, number = assignment.job, assignment.attempt.number
        store, key = open_location(job.spec_uri)
        body = store.get(key)
        if job.spec_sha256 and hashlib.sha256(body).hexdigest() != job.spec_sha256:
            raise SpecTampered(f"{job.spec_uri} changed after submission (its sha256 is not "
                               f"the recorded {job.spec_sha256[:12]}…); refusing to run it")
        spec = load_spec(body, source=job.spec_uri)
        access = self.config.access_for(job.team)
        env = {
            ENV_API_URL: self.config.api_url,
            ENV_JOB_ID: job.id,
            ENV_ATTEMPT: str(number),
            ENV_JOB_TEAM: job.team,
            ENV_JOB_ACCESS: access.to_env(),
            ENV_SPEC_SHA256: job.spec_sha256,
            ENV_ARTIFACTS_URI: self.config.artifacts_uri,
            ENV_MODELS_URI: self.config.models_uri,
        }
        if self.config.s3_endpoint_url:
            env[ENV_S3_ENDPOINT_URL] = self.config.s3_endpoint_url
        secrets = {ENV_JOB_TOKEN: job_token(self.config.secret_key, job.id, number)}
        if not getattr(self.backend, "private_env", False):
            env[ENV_JOB_SECRETS_URI] = self._store_secrets(job.id, number, secrets)
            secrets = {}
        return LaunchRequest(
            job_id=job.id,
            kind=job.kind,
            spec_uri=job.spec_uri,
            attempt=number,
            resources=spec.resources,
            retries=spec.retries,
            timeout_s=spec.timeout_minutes * 60,
            team=job.team,
            env=env,
            secrets=secrets,
        )

    def _secrets_location(self, job_id: str, attempt: int) -> tuple[ObjectStore, str]:
        store, prefix = open_location(self.config.artifacts_uri.rstrip("/") + "/")
        return store, join_key(prefix, attempt_secrets_key(job_id, attempt))

    def _store_secrets(self, job_id: str, attempt: int, secrets: dict[str, str]) -> str:
        store, key = self._secrets_location(job_id, attempt)
        store.put(key, json.dumps(secrets).encode(), content_type="application/json")
        return store.uri(key)

    def _drop_secrets(self, job_id: str, attempt: int) -> None:
        """Delete an ended attempt's stored secrets (its token is refused from now on anyway)."""
        if getattr(self.backend, "private_env", False):
            return
        try:
            store, key = self._secrets_location(job_id, attempt)
            store.delete(key)
        except StorageError as exc:
            log.warning("could not delete the secrets of job %s attempt %d: %s",
                        job_id, attempt, exc)

    def _launch(self, assignment: Assignment) -> None:
        job, number = assignment.job, assignment.attempt.number
        key = (job.id, number)
        try:
            handle = self.backend.launch(self._request(assignment))
        except SpecTampered as exc:
            log.error("job %s attempt %d: %s", job.id, number, exc.message)
            with self.db.transaction() as session:
                dispatch.settle(session, job.id, number, succeeded=False, message=exc.message,
                                retry_delay=self.config.retry_delay, error_code=exc.code)
            return
        except Exception as exc:
            DISPATCHER_ERRORS.labels(backend=self.backend.name, operation="launch").inc()
            failures = self._launch_failures.get(key, 0) + 1
            self._launch_failures[key] = failures
            log.warning("launching job %s attempt %d failed (%d/%d): %s",
                        job.id, number, failures, MAX_LAUNCH_FAILURES, exc)
            if failures >= MAX_LAUNCH_FAILURES:
                with self.db.transaction() as session:
                    dispatch.settle(session, job.id, number, succeeded=False,
                                    message=f"launch failed {failures} times: {exc}",
                                    retry_delay=self.config.retry_delay)
                self._launch_failures.pop(key, None)
                self._drop_secrets(job.id, number)
            return
        self._launch_failures.pop(key, None)
        self._fault("after_launch")
        with self.db.transaction() as session:
            dispatch.record_launch(session, job.id, number, handle)
        self._fault("after_record")

    def _cancel_and_poll(self) -> None:
        with self.db.transaction() as session:
            dispatch.cancel_idle(session)
            flights = dispatch.in_flight(session)
        self._stopping = any(a.job.state.value == "CANCELLING" for a in flights)
        for assignment in flights:
            self._poll(assignment)

    def _output_tail(self, handle: str, lines: int = 20) -> str:
        """The end of a failed run's output as the backend kept it: the only account of a job
        that died before it could report its own failure (or ship its log)."""
        try:
            output = self.backend.logs(handle)
        except Exception as exc:
            DISPATCHER_ERRORS.labels(backend=self.backend.name, operation="logs").inc()
            log.warning("reading the output of %s failed: %s", handle, exc)
            return ""
        tail = "\n".join(strip_ansi(output).strip().splitlines()[-lines:])[-2000:]
        return f"; last output:\n{tail}" if tail else ""

    def _poll(self, assignment: Assignment) -> None:
        job, attempt = assignment.job, assignment.attempt
        handle = attempt.handle
        assert handle is not None  # in_flight() only returns launched attempts
        name = self.backend.name
        if job.state.value == "CANCELLING":
            try:
                self.backend.cancel(handle)
            except Exception as exc:
                DISPATCHER_ERRORS.labels(backend=name, operation="cancel").inc()
                log.warning("cancelling %s (%s) failed: %s", job.id, handle, exc)
        try:
            status = self.backend.poll(handle)
        except Exception as exc:
            DISPATCHER_ERRORS.labels(backend=name, operation="poll").inc()
            log.warning("polling %s (%s) failed: %s", job.id, handle, exc)
            return
        if status.state is BackendState.PENDING:
            return
        message = status.message or status.state.value.lower()
        if status.state is BackendState.UNKNOWN:
            message = f"the backend has no record of run {handle}"
        elif status.state is BackendState.FAILED and job.error is None:
            message += self._output_tail(handle)
        with self.db.transaction() as session:
            if status.state is BackendState.RUNNING:
                dispatch.mark_running(session, job.id, attempt.number)
                return
            dispatch.settle(
                session,
                job.id,
                attempt.number,
                succeeded=status.state is BackendState.SUCCEEDED,
                message=message,
                retry_delay=self.config.retry_delay,
            )
        self._drop_secrets(job.id, attempt.number)

