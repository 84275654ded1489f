"""Job use cases behind the /v1/jobs routes: submit (idempotent, limited), read, cancel."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError

from services.api.schemas import EventOut, EventPage, JobOut, JobPage, JobSubmission
from services.api.settings import TeamLimits
from services.api.state import AppState
from services.store import jobs as repo
from services.store.domain import IdempotentResponse, NewJob
from services.store.ids import new_job_id
from trainforge.errors import (
    IdempotencyKeyReused,
    InvalidRequest,
    LimitExceeded,
    QuotaExceeded,
    StorageError,
)
from trainforge.layout import spec_key
from trainforge.spec import JobKind, JobSpec
from trainforge.states import JobState

log = logging.getLogger(__name__)

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class Submitted:
    status_code: int
    body: dict[str, Any]
    replayed: bool


def request_fingerprint(body: JobSubmission) -> str:
    """SHA-256 of the request as sent (key order and whitespace do not matter)."""
    canonical = json.dumps(
        body.model_dump(mode="json", exclude_unset=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def gpus_requested(spec: JobSpec) -> int:
    """GPUs the job may hold at once: ``resources.gpus``, or for a sweep, concurrent trials ×
    GPUs per trial (all trials when the spec sets no concurrency limit) if that is more."""
    gpus = spec.resources.gpus
    if spec.kind is JobKind.SWEEP and spec.sweep is not None:
        concurrent = spec.sweep.max_concurrent_trials or spec.sweep.trials
        gpus = max(gpus, math.ceil(spec.sweep.gpus_per_trial * concurrent))
    return gpus


def _check_job_limits(spec: JobSpec, team: str, limits: TeamLimits) -> None:
    gpus = gpus_requested(spec)
    if gpus > limits.max_gpus_per_job:
        raise LimitExceeded(
            f"the job asks for {gpus} GPUs (resources.gpus, or for sweeps concurrent trials × "
            f"sweep.gpus_per_trial); team {team!r} may use at most "
            f"{limits.max_gpus_per_job} per job"
        )
    if spec.sweep is not None and spec.sweep.trials > limits.max_sweep_trials:
        raise LimitExceeded(
            f"sweep.trials is {spec.sweep.trials}; team {team!r} may run at most "
            f"{limits.max_sweep_trials} trials per sweep"
        )


def _replay(found: IdempotentResponse, fingerprint: str, key: str) -> Submitted:
    if found.request_sha256 != fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was already used for a different request (job "
            f"{found.job_id}); use a new key for a new job"
        )
    return Submitted(found.status_code, found.response, replayed=True)


class _NearLimit(Exception):
    """The shared-lock fast path cannot prove the limit holds: redo with the exclusive lock."""


def submit(
    state: AppState, team: str, body: JobSubmission, idempotency_key: str | None
) -> Submitted:
    """Accept a job exactly once.

    The spec is written to ``jobs/<id>/spec.json`` first; the job row (and the idempotency
    record) are committed after, so a job never exists without its spec, and a submission that
    fails half-way leaves at most an orphan spec nobody can see (it is deleted).

    The active-job limit is exact without serialising a team's submissions: a transaction
    normally takes the team's advisory lock *shared* and commits if, counting its own job,
    ``count + (transactions that can be in flight at once) - 1 <= limit``: even if every other
    possible transaction added a job, the limit holds. Nearer the limit it takes the lock
    *exclusive*, which waits for the shared holders to commit and counts exactly.

    Raises:
        InvalidRequest: a malformed Idempotency-Key.
        IdempotencyKeyReused: the key came with a different body before.
        LimitExceeded: the job asks for more GPUs or trials than the team may use.
        QuotaExceeded: the team is at its active-job limit.
    """
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidRequest("Idempotency-Key must be 1-255 printable ASCII characters")
    fingerprint = request_fingerprint(body)
    spec = body.spec
    limits = state.settings.limits_for(team)
    _check_job_limits(spec, team, limits)
    job_id = new_job_id()
    key = state.key(spec_key(job_id))
    info = state.artifacts.put(key, spec.to_json().encode(), content_type="application/json")
    new = NewJob(
        id=job_id,
        team=team,
        kind=spec.kind,
        name=spec.name,
        # root_uri + key is what uri(key) returns, without resolving the path a second time.
        spec_uri=f"{state.artifacts.root_uri}/{key}",
        spec_sha256=info.sha256 or "",
        gpus=gpus_requested(spec),
        max_attempts=spec.retries + 1,
    )
    try:
        for exclusive in (False, True):
            try:
                with state.db.transaction() as session:
                    repo.lock_team(session, team, exclusive=exclusive)
                    # No lookup of the key first: the (team, key) primary key refuses a
                    # duplicate (IntegrityError below), which saves a round trip on every
                    # first submission; retries are the rare case.
                    job = repo.insert_job(session, new)
                    response = JobOut.from_domain(job).model_dump(mode="json")
                    if idempotency_key is not None:
                        repo.remember_idempotent(
                            session, team, idempotency_key, request_sha256=fingerprint,
                            job_id=job_id, status_code=201, response=response,
                        )
                    active = repo.count_unfinished(session, team)  # includes this job
                    if not exclusive and active - 1 + repo.concurrent_transactions_bound(
                        session
                    ) > limits.max_active_jobs:
                        raise _NearLimit
                    if active > limits.max_active_jobs:
                        raise QuotaExceeded(
                            f"team {team!r} has {active - 1} unfinished jobs, its limit is "
                            f"{limits.max_active_jobs}; retry when some finish or cancel one"
                        )
                break
            except _NearLimit:
                continue
    except IntegrityError:
        # The key was used before (a retry, or a concurrent duplicate): replay the first.
        _discard_spec(state, key)
        if idempotency_key is None:
            raise
        with state.db.transaction() as session:
            found = repo.find_idempotent(session, team, idempotency_key)
        if found is None:
            raise
        return _replay(found, fingerprint, idempotency_key)
    except BaseException:
        _discard_spec(state, key)
        raise
    log.info("job %s submitted by team %s (%s %s)", job_id, team, spec.kind, spec.name)
    return Submitted(201, response, replayed=False)


def _discard_spec(state: AppState, key: str) -> None:
    try:
        state.artifacts.delete(key)
    except StorageError as exc:  # an orphan spec is invisible; keep the original error
        log.warning("could not delete orphan spec %s: %s", key, exc)


def get(state: AppState, team: str, job_id: str) -> JobOut:
    with state.db.transaction() as session:
        return JobOut.from_domain(repo.get_job(session, job_id, team=team))


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """Raises InvalidRequest for anything this API did not hand out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, seq = raw.partition(":")
        if version != "v1" or not seq.isdigit() or int(seq) >= 2**63:
            raise ValueError(raw)
        return int(seq)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidRequest(
            f"cursor {cursor!r} is not one this API returned; start again without it"
        ) from None


def list_page(
    state: AppState,
    team: str,
    *,
    states: list[JobState],
    kind: JobKind | None,
    limit: int,
    cursor: str | None,
) -> JobPage:
    before = decode_cursor(cursor) if cursor else None
    with state.db.transaction() as session:
        jobs, next_seq = repo.list_jobs(
            session, team, states=states, kind=kind, limit=limit, before_seq=before
        )
    return JobPage(
        items=[JobOut.from_domain(j) for j in jobs],
        next_cursor=encode_cursor(next_seq) if next_seq is not None else None,
    )


def cancel(state: AppState, team: str, job_id: str) -> JobOut:
    with state.db.transaction() as session:
        job = repo.request_cancel(session, job_id, team=team, reason=f"cancel requested by {team}")
    return JobOut.from_domain(job)


def events_page(state: AppState, team: str, job_id: str, *, after: int, limit: int) -> EventPage:
    with state.db.transaction() as session:
        repo.get_job(session, job_id, team=team)  # 404 for other teams' jobs
        events = repo.list_events(session, job_id, after_id=after, limit=limit)
    return EventPage(
        items=[EventOut.from_domain(e) for e in events],
        next_after=events[-1].id if events else after,
    )
