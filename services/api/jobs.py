"""Job use cases behind the /v1/jobs routes: submit and resume (idempotent, limited), read,
cancel."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from services.api.schemas import EventOut, EventPage, JobOut, JobPage, JobResume, JobSubmission
from services.api.state import AppState
from services.store import admission, creation, events, resumption, submission
from services.store import jobs as repo
from services.store.domain import IdempotentResponse, Job
from services.store.idempotency import find_idempotent, find_idempotent_async
from trainforge.errors import IdempotencyKeyReused, InvalidRequest
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
    return _sha256_json(body.model_dump(mode="json", exclude_unset=True))


def _sha256_json(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(found: IdempotentResponse, fingerprint: str, key: str) -> Submitted:
    if found.request_sha256 != fingerprint:
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was already used for a different request (job "
            f"{found.job_id}); use a new key for a new job"
        )
    return Submitted(found.status_code, found.response, replayed=True)


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise InvalidRequest("Idempotency-Key must be 1-255 printable ASCII characters")


class _Responses:
    """The response body of each new job, built once: stored with the Idempotency-Key in the
    job's transaction, then sent."""

    def __init__(self) -> None:
        self._bodies: dict[str, dict[str, Any]] = {}

    def __call__(self, job: Job) -> dict[str, Any]:
        body = self._bodies.get(job.id)
        if body is None:
            body = self._bodies[job.id] = JobOut.from_domain(job).model_dump(mode="json")
        return body


def _idempotency(key: str | None, fingerprint: str, responses: _Responses
                 ) -> submission.Idempotency | None:
    # No lookup of the key first: the (team, key) primary key refuses a duplicate
    # (IdempotencyKeyTaken), which saves a round trip on every first submission; retries are
    # the rare case.
    return submission.Idempotency(key, fingerprint, responses) if key is not None else None


def _request(state: AppState, team: str, spec: JobSpec,
             idempotency: submission.Idempotency | None) -> submission.JobRequest:
    """A creation of ``spec`` under the team's limits and rules, on this app's machine."""
    return submission.JobRequest(team, spec, state.settings.limits_for(team),
                                 access=state.access_for(team), machine=state.machine,
                                 idempotency=idempotency)


async def submit_async(
    state: AppState, team: str, body: JobSubmission, idempotency_key: str | None
) -> Submitted:
    """Accept a job exactly once (services/store/submission.py says how), remembering the
    response to an Idempotency-Key in the job's transaction; on PostgreSQL no thread at all for
    a spec without a ``registry://`` base and a local artifacts store
    (submission.create_job_async).

    Args:
        state: the app's state.
        team: the caller's team.
        body: the request.
        idempotency_key: the request's Idempotency-Key header, if any.

    Returns:
        The status, body and whether it is a replay.

    Raises:
        InvalidRequest: a malformed Idempotency-Key.
        IdempotencyKeyReused: the key came with a different body before.
        AccessDenied, LocationInvalid: the spec names a location the team may not read.
        ModelNotFound: a registry:// base the team has not published.
        LimitExceeded: the job asks for more GPUs or trials than the team may use.
        DatasetError, WeightsError: on the embedded server, a local dataset or base weights
            the job could not open (admission.check_job_inputs).
        QuotaExceeded: the team is at its active-job limit.
    """
    _check_key(idempotency_key)
    fingerprint = request_fingerprint(body)
    if admission.reads_models_store(body.spec):  # I/O in the models store: not on the loop
        await to_thread.run_sync(
            admission.check_model_ref, body.spec, state.settings.team_models_uri(team)
        )
    responses = _Responses()
    try:
        job = await submission.create_job_async(
            state.db, state.artifacts, state.artifacts_prefix,
            _request(state, team, body.spec,
                     _idempotency(idempotency_key, fingerprint, responses)),
        )
    except submission.IdempotencyKeyTaken:
        assert idempotency_key is not None  # only raised for a key
        found = await _find_idempotent(state, team, idempotency_key)
        return _replay_found(found, fingerprint, idempotency_key)
    return Submitted(201, responses(job), replayed=False)


async def _find_idempotent(state: AppState, team: str, key: str) -> IdempotentResponse | None:
    if not state.db.is_postgres:
        return await to_thread.run_sync(_find_idempotent_sync, state, team, key)
    async with state.db.async_pool().connection() as conn:
        return await find_idempotent_async(conn, team, key)


def _find_idempotent_sync(state: AppState, team: str, key: str) -> IdempotentResponse | None:
    with state.db.transaction() as session:
        return find_idempotent(session, team, key)


def _replay_found(found: IdempotentResponse | None, fingerprint: str, key: str) -> Submitted:
    if found is None:
        # Taken, yet not there: the record was deleted since (with its job). Not a client
        # error: a 500, as before the creation path could say which constraint refused it.
        raise RuntimeError(f"Idempotency-Key {key!r} was refused as taken but has no record")
    return _replay(found, fingerprint, key)


def resume(
    state: AppState, team: str, job_id: str, body: JobResume, idempotency_key: str | None
) -> Submitted:
    """Submit a new job that continues a stopped job's last checkpoint
    (services/store/resumption.py), through the same creation path, checks and Idempotency-Key
    rules as :func:`submit_async`.

    Args:
        state: the app's state.
        team: the caller's team.
        job_id: the stopped job.
        body: what changes (``epochs``).
        idempotency_key: the request's Idempotency-Key header, if any.

    Returns:
        The new job (or the first response to the same key and request), as :func:`submit_async`.

    Raises:
        InvalidRequest, IdempotencyKeyReused: see :func:`submit_async`.
        JobNotFound: no such job for this team.
        JobNotResumable: its kind or state does not allow it, it was resumed already, or it
            left no checkpoint.
        SpecError: ``epochs`` is below the epochs it already trained.
        AccessDenied, LocationInvalid, ModelNotFound, LimitExceeded, QuotaExceeded: its spec
            is checked again, as a new submission's.
    """
    _check_key(idempotency_key)
    # The job's id is part of the request: the same key and body for another job is a reuse.
    fingerprint = _sha256_json({"resume": job_id,
                                **body.model_dump(mode="json", exclude_unset=True)})
    # A retry must be replayed before the checks: after the first request, the job it resumed
    # is "already resumed".
    replayed = _replayed(state, team, idempotency_key, fingerprint)
    if replayed is not None:
        return replayed
    planned = resumption.plan(state.db, state.artifacts, state.artifacts_prefix, team, job_id,
                              epochs=body.epochs)
    admission.check_model_ref(planned.spec, state.settings.team_models_uri(team))
    responses = _Responses()
    try:
        job = submission.create_job(
            state.db, state.artifacts, state.artifacts_prefix,
            _request(state, team, planned.spec,
                     _idempotency(idempotency_key, fingerprint, responses)),
            resume=planned.source,
        )
    except (submission.IdempotencyKeyTaken, creation.AlreadyResumed) as exc:
        # A concurrent request won: the same one (replay it) or another resumption.
        replayed = _replayed(state, team, idempotency_key, fingerprint)
        if replayed is not None:
            return replayed
        if isinstance(exc, submission.IdempotencyKeyTaken):
            raise RuntimeError(f"Idempotency-Key {idempotency_key!r} was refused as taken "
                               "but has no record") from None
        resumption.check(state.db, team, job_id)  # names the job that resumed it
        raise  # resumed and then gone: cannot happen, jobs are never deleted
    return Submitted(201, responses(job), replayed=False)


def _replayed(state: AppState, team: str, key: str | None, fingerprint: str
              ) -> Submitted | None:
    """The stored response to ``key`` when it was used before (None for a new key)."""
    if key is None:
        return None
    found = _find_idempotent_sync(state, team, key)
    return _replay(found, fingerprint, key) if found is not None else None


def resumed_as(state: AppState, team: str, job_id: str) -> str | None:
    """The team's job that resumed ``job_id``, if one did (the dashboard's link back)."""
    with state.db.transaction() as session:
        return repo.resumed_by(session, job_id, team=team)


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
    name: str | None = None,
) -> JobPage:
    """A page of the team's jobs, newest first (``name``: the dashboard's filter by model)."""
    before = decode_cursor(cursor) if cursor else None
    with state.db.transaction() as session:
        jobs, next_seq = repo.list_jobs(
            session, team, states=states, kind=kind, name=name, limit=limit, before_seq=before
        )
    return JobPage(
        items=[JobOut.from_domain(j) for j in jobs],
        next_cursor=encode_cursor(next_seq) if next_seq is not None else None,
    )


def best_scores(state: AppState, page: JobPage, metric: str) -> dict[str, float]:
    """Each listed job's best ``metric`` over its epochs and trials (a page from
    :func:`list_page`, hence the caller team's jobs only)."""
    with state.db.transaction() as session:
        return repo.best_metrics(session, [j.id for j in page.items], metric)


def cancel(state: AppState, team: str, job_id: str) -> JobOut:
    """Cancel a job: a queued one at once (CANCELLED), a launched one through CANCELLING
    (the dispatcher stops its run; this process's own dispatcher is woken to do it now).

    Raises:
        JobNotFound: no such job for this team.
        JobStateConflict: the job is already finished.
    """
    with state.db.transaction() as session:
        job = events.request_cancel(session, job_id, team=team,
                                    reason=f"cancel requested by {team}")
    if state.wake_dispatcher is not None and job.state is JobState.CANCELLING:
        state.wake_dispatcher()
    return JobOut.from_domain(job)


def events_page(state: AppState, team: str, job_id: str, *, after: int, limit: int) -> EventPage:
    with state.db.transaction() as session:
        repo.get_job(session, job_id, team=team)  # 404 for other teams' jobs
        events = repo.list_events(session, job_id, after_id=after, limit=limit)
    return EventPage(
        items=[EventOut.from_domain(e) for e in events],
        next_after=events[-1].id if events else after,
    )
