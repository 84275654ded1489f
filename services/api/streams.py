"""Streams: job events as server-sent events, and a job's log (whole, or followed).

Both poll the database / object store every ``stream_poll_s`` and end when the job is done
(or after ``stream_max_s``; clients reconnect with Last-Event-ID or an offset).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from anyio import to_thread

from services.api.schemas import EventOut
from services.api.state import AppState
from services.store import dispatch
from services.store import jobs as repo
from trainforge.errors import NotFound, ObjectNotFound
from trainforge.layout import attempt_log_key


def sse_frame(event: EventOut) -> bytes:
    """One server-sent event: ``id``, ``event`` (state|progress|message) and JSON ``data``."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def event_stream(
    state: AppState, team: str, job_id: str, after: int
) -> AsyncIterator[bytes]:
    """Every event after ``after``, then new ones as they happen, until the job is terminal."""
    deadline = time.monotonic() + state.settings.stream_max_s
    # Tell the client how long to wait before reconnecting (EventSource honours it).
    yield f"retry: {int(state.settings.stream_poll_s * 1000)}\n\n".encode()
    while True:

        def read(after: int = after) -> tuple[list[EventOut], bool]:
            with state.db.transaction() as session:
                job = repo.get_job(session, job_id, team=team)
                events = repo.list_events(session, job_id, after_id=after, limit=500)
            return [EventOut.from_domain(e) for e in events], job.state.terminal

        events, terminal = await to_thread.run_sync(read)
        for event in events:
            yield sse_frame(event)
            after = event.id
        if (terminal and len(events) < 500) or time.monotonic() > deadline:
            return
        if not events:
            yield b": keep-alive\n\n"
        await anyio.sleep(state.settings.stream_poll_s)


@dataclass(frozen=True)
class LogTarget:
    key: str
    attempt: int


def log_target(state: AppState, team: str, job_id: str, attempt: int | None) -> LogTarget | None:
    """Which attempt's log to read: the one asked for, else the latest (None: no attempt yet).

    Raises:
        JobNotFound: no such job for this team.
        NotFound: the job has no such attempt.
    """
    with state.db.transaction() as session:
        job = repo.get_job(session, job_id, team=team)
    if attempt is None:
        if job.attempts == 0:
            return None
        attempt = job.attempts
    if not 1 <= attempt <= job.attempts:
        raise NotFound(f"job {job_id} has {job.attempts} attempt(s); there is no attempt {attempt}")
    return LogTarget(state.key(attempt_log_key(job_id, attempt)), attempt)


_CHUNK = 1 << 20


def read_log(state: AppState, target: LogTarget | None, offset: int = 0) -> bytes:
    """The log's bytes from ``offset`` (empty if the job has not written one yet).

    Stores that can read a byte range (S3, local) send only the new bytes of a followed log.
    """
    if target is None:
        return b""
    get_range: Callable[[str, int, int], bytes] | None = getattr(
        state.artifacts, "get_range", None
    )
    try:
        if offset and get_range is not None:
            parts = []
            while chunk := get_range(target.key, offset, _CHUNK):
                parts.append(chunk)
                offset += len(chunk)
                if len(chunk) < _CHUNK:
                    break
            return b"".join(parts)
        return state.artifacts.get(target.key)[offset:]
    except ObjectNotFound:
        return b""


def _progress_of(state: AppState, team: str, job_id: str) -> tuple[int, bool]:
    """(latest attempt, whether that attempt can write no more log)."""
    with state.db.transaction() as session:
        job = repo.get_job(session, job_id, team=team)
        if not job.state.terminal:
            return job.attempts, False
        if job.attempts == 0:
            return 0, True
        # The run uploads its last log lines as it exits, after reporting its outcome: wait
        # until the dispatcher saw the exit (or the attempt never launched).
        last = dispatch.attempts_of(session, job_id)[-1]
        return job.attempts, last.finished_at is not None or last.handle is None


async def follow_log(
    state: AppState, team: str, job_id: str, attempt: int | None
) -> AsyncIterator[bytes]:
    """The log so far, then new bytes as they are uploaded, until the attempt is over.

    Following the latest attempt (``attempt`` None) moves on to the next attempt when the job
    retries, with a ``--- attempt N ---`` line between the two logs.
    """
    deadline = time.monotonic() + state.settings.stream_max_s
    target = await to_thread.run_sync(log_target, state, team, job_id, attempt)
    offset = 0
    while True:
        latest, over = await to_thread.run_sync(_progress_of, state, team, job_id)
        moved_on = target is not None and latest > target.attempt
        chunk = await to_thread.run_sync(read_log, state, target, offset)
        if chunk:
            offset += len(chunk)
            yield chunk
        if moved_on and attempt is None:
            target = await to_thread.run_sync(log_target, state, team, job_id, latest)
            offset = 0
            yield f"\n--- attempt {latest} ---\n".encode()
            continue
        if target is None and latest > 0:
            target = await to_thread.run_sync(log_target, state, team, job_id, latest)
            continue
        if over or moved_on or time.monotonic() > deadline:
            return
        await anyio.sleep(state.settings.stream_poll_s)
