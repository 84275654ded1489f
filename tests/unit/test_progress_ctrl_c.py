"""Ctrl-C stops watching a job even when its KeyboardInterrupt is swallowed on the way
(trainforge/cli/progress.py): Python raises it wherever the main thread happens to be, and in
a finalizer it is only printed as "Exception ignored". A fake client stands in for the API."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console

from trainforge.cli import progress


class SwallowingClient:
    """Its second events request receives Ctrl-C and swallows the KeyboardInterrupt, as a
    finalizer running at that moment would."""

    def __init__(self) -> None:
        self.requests = 0

    def events(self, job_id: str, *, after: int, limit: int) -> list[dict[str, Any]]:
        self.requests += 1
        assert self.requests < 5, "still watching after Ctrl-C"
        if self.requests == 2:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)  # the handler raises in here
            except KeyboardInterrupt:
                pass
        return []

    def get(self, job_id: str) -> dict[str, Any]:
        return {"id": job_id, "state": "RUNNING"}


@pytest.fixture()
def python_ctrl_c() -> Iterator[None]:
    """SIGINT as a fresh Python process has it (a test runner may have changed it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_swallowed_interrupt_still_stops_the_watch(python_ctrl_c: None) -> None:
    client = SwallowingClient()
    started = time.monotonic()
    with pytest.raises(progress.StoppedWatching) as stopped:
        progress.watch(client, "j1", Console(quiet=True), poll_s=0.01)  # type: ignore[arg-type]
    assert client.requests == 2, "no request after the one Ctrl-C interrupted"
    assert stopped.value.state == "RUNNING"
    assert time.monotonic() - started < 4, "Ctrl-C cut the request short"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handler restored"


def test_an_ignored_ctrl_c_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with progress._ctrl_c() as pressed:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert not pressed.is_set()
    finally:
        signal.signal(signal.SIGINT, previous)
