"""Streams: job events as server-sent events, and a job's log (whole, or followed).

Both poll the database / object store every ``stream_poll_s`` and end when the job is done
(or after ``stream_max_s``; clients reconnect with Last-Event-ID or an offset).

Each open stream holds one of its bearer token's ``stream_max_per_token`` slots
(:class:`StreamSlots`): every stream costs a poll loop, so one token holding thousands would
slow every other team's requests. Slots are counted per process (per uvicorn worker).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import anyio
from anyio import to_thread
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.api.schemas import EventOut
from services.api.state import AppState
from services.store import dispatch
from services.store import jobs as repo
from trainforge.errors import NotFound, ObjectNotFound, TooManyStreams
from trainforge.layout import attempt_log_key


@dataclass
class StreamSlot:
    """One open stream of one token; :meth:`release` is idempotent."""

    slots: StreamSlots
    digest: str
    released: bool = field(default=False)

    def release(self) -> None:
        self.slots._release(self)


class StreamSlots:
    """Open streams per bearer token (keyed by the token's SHA-256; no plaintext kept).

    Process-local: with several uvicorn workers, a token may hold ``limit`` streams in each.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, digest: str) -> StreamSlot:
        """Take a slot for a new stream of the token with SHA-256 ``digest``.

        Raises:
            TooManyStreams: the token has ``limit`` streams open.
        """
        with self._lock:
            open_now = self._open.get(digest, 0)
            if open_now >= self.limit:
                raise TooManyStreams(
                    f"this token has {open_now} streams open (event streams and followed "
                    f"logs), the limit is {self.limit}; close one, or read events as JSON "
                    "pages (GET /v1/jobs/{id}/events without Accept: text/event-stream)"
                )
            self._open[digest] = open_now + 1
        return StreamSlot(self, digest)

    def open_for(self, digest: str) -> int:
        with self._lock:
            return self._open.get(digest, 0)

    def _release(self, slot: StreamSlot) -> None:
        with self._lock:  # the flag too: the route's thread and the event loop may both try
            if slot.released:
                return
            slot.released = True
            left = self._open.get(slot.digest, 0) - 1
            if left > 0:
                self._open[slot.digest] = left
            else:
                self._open.pop(slot.digest, None)


class SlotStreamingResponse(StreamingResponse):
    """A streaming response that gives its stream slot back however the stream ends.

    Released in ``__call__``'s ``finally``, not in the body generator: when the client
    disconnects while the generator is suspended at a ``yield``, Starlette cancels the send
    and the generator's own ``finally`` would wait for garbage collection.
    """

    def __init__(
        self,
        content: AsyncIterator[bytes],
        slot: StreamSlot,
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


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
        return job.attempts, dispatch.outputs_final(session, job)


async def follow_log(
    state: AppState,
    team: str,
    job_id: str,
    attempt: int | None,
    target: LogTarget | None,
    first: bytes = b"",
) -> AsyncIterator[bytes]:
    """The log so far, then new bytes as they are uploaded, until the attempt is over.

    Following the latest attempt (``attempt`` None) moves on to the next attempt when the job
    retries, with a ``--- attempt N ---`` line between the two logs.

    Args:
        state, team, job_id, attempt: whose log, as for :func:`log_target`.
        target: :func:`log_target`'s answer, found before the response started.
        first: the log's bytes read before the response started (so that a failing store
            is a 503, not a stream that breaks after a 200).
    """
    deadline = time.monotonic() + state.settings.stream_max_s
    offset = len(first)
    if first:
        yield first
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
