"""One bearer token holds at most ``stream_max_per_token`` open streams (SSE events and followed
logs); the next is a 429, other tokens are not slowed, and a slot comes back when its stream
ends or its client disconnects.

A live uvicorn server on loopback and real HTTP connections (one per stream).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import httpx
from fastapi import FastAPI

from services.api import create_app
from services.api.settings import ApiSettings
from services.store import Database, tokens
from tests.fixtures.api import SPEC
from tests.fixtures.network import serve_app

CAP = 6
SSE = {"Accept": "text/event-stream"}


def _open(stack: ExitStack, client: httpx.Client, job_id: str, i: int) -> httpx.Response:
    """Stream number ``i``: even ones are event streams, odd ones followed logs."""
    if i % 2 == 0:
        stream = stack.enter_context(client.stream("GET", f"/v1/jobs/{job_id}/events",
                                                   headers=SSE))
        assert stream.status_code == 200, stream.read()
        # Read the first line to see the stream is live. Keep the iterator until the stack
        # closes: dropping a half-read iterator makes httpx close the connection.
        lines = stream.iter_lines()
        assert next(lines).startswith("retry: ")
        stack.callback(lines.close)
    else:
        stream = stack.enter_context(client.stream("GET", f"/v1/jobs/{job_id}/logs",
                                                   params={"follow": "true"}))
        assert stream.status_code == 200, stream.read()
    return stream


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert body["code"] == "too_many_streams"
    assert f"this token has {CAP} streams open" in body["detail"]
    assert f"the limit is {CAP}" in body["detail"]


def _wait_released(app: FastAPI, digest: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while app.state.stream_slots.open_for(digest):
        assert time.monotonic() < deadline, (
            f"{app.state.stream_slots.open_for(digest)} slot(s) still held")
        time.sleep(0.05)


@contextmanager
def _client(url: str, token: str) -> Iterator[httpx.Client]:
    # One connection per open stream, and a few spare for the requests beside them.
    limits = httpx.Limits(max_connections=CAP + 4, max_keepalive_connections=CAP + 4)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                      limits=limits) as client:
        yield client


def test_streams_per_token_are_capped_and_released(
    settings: ApiSettings, db: Database, make_token: Callable[[str], str],
) -> None:
    settings.stream_max_per_token = CAP
    settings.stream_poll_s = 0.2
    settings.stream_max_s = 300  # the streams below end when the test says so
    app = create_app(settings)
    token_a, token_b = make_token("vision"), make_token("audio")
    digest_a = tokens.sha256_hex(token_a)
    with serve_app(app) as url, _client(url, token_a) as a, _client(url, token_b) as b:
        job_a = a.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        job_b = b.post("/v1/jobs", json={"spec": SPEC}).json()["id"]

        with ExitStack() as streams:
            for i in range(CAP):
                _open(streams, a, job_a, i)
            assert app.state.stream_slots.open_for(digest_a) == CAP
            _assert_refused(a.get(f"/v1/jobs/{job_a}/events", headers=SSE))
            _assert_refused(a.get(f"/v1/jobs/{job_a}/logs", params={"follow": "true"}))
            # Refusals hold no slot, and what is not a stream is not limited.
            assert app.state.stream_slots.open_for(digest_a) == CAP
            assert a.get(f"/v1/jobs/{job_a}/events").status_code == 200  # a JSON page
            assert a.get(f"/v1/jobs/{job_a}/logs").status_code == 200  # the log so far

            # Another token is neither refused nor slowed by the first one's streams.
            latencies = []
            for _ in range(20):
                started = time.perf_counter()
                listed = b.get("/v1/jobs")
                latencies.append(time.perf_counter() - started)
                assert listed.status_code == 200 and listed.json()["items"][0]["id"] == job_b
            assert max(latencies) < 2.0, latencies  # ~5 ms unloaded; 1-5 s was the attack
            with ExitStack() as other:
                _open(other, b, job_b, 0)
            # Client disconnects: leaving the block closes every connection mid-stream.

        _wait_released(app, digest_a)
        with ExitStack() as streams:
            for i in range(CAP):  # all CAP slots came back, not just some
                _open(streams, a, job_a, i)
            _assert_refused(a.get(f"/v1/jobs/{job_a}/events", headers=SSE))
            # A stream that ends by itself (the job is done) frees its slot too.
            assert a.post(f"/v1/jobs/{job_a}/cancel").json()["state"] == "CANCELLED"
            _wait_released(app, digest_a)
        # And a token whose streams ended can open one again.
        job_c = a.post("/v1/jobs", json={"spec": SPEC}).json()["id"]
        with ExitStack() as streams:
            _open(streams, a, job_c, 0)
            assert app.state.stream_slots.open_for(digest_a) == 1
        _wait_released(app, digest_a)
