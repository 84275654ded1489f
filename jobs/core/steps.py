"""Each step of a job logs exactly one outcome line with its duration."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("jobs.core.steps")

#: The innermost step of the main thread that was stopped rather than failed (a cancel), for
#: the job's last log line.
_stopped_in: str | None = None


class Outcome:
    """What a step reports about itself; set ``text`` before the step ends."""

    def __init__(self) -> None:
        self.text = "done"


@contextmanager
def step(name: str) -> Iterator[Outcome]:
    """Time a step and log ``step <name>: <outcome> (<seconds>s)``, its failure, or that it
    was stopped (a cancel: see :func:`stopped_in`).

    Args:
        name: a short step name (``dataset-sync``, ``train``…).

    Yields:
        An :class:`Outcome` whose ``text`` becomes the log line.
    """
    global _stopped_in
    outcome = Outcome()
    started = time.perf_counter()
    try:
        yield outcome
    except Exception as exc:
        log.error("step %s: FAILED after %.2fs: %s", name, time.perf_counter() - started,
                  str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    except BaseException:
        # A cancel (SIGTERM, or ray.init's own handler exiting on it) or an interrupt: the
        # step did not fail, it was stopped.
        log.warning("step %s: stopped after %.2fs", name, time.perf_counter() - started)
        if _stopped_in is None and threading.current_thread() is threading.main_thread():
            _stopped_in = name  # the innermost step: its handler runs first
        raise
    log.info("step %s: %s (%.2fs)", name, outcome.text, time.perf_counter() - started)


def stopped_in() -> str | None:
    """The innermost step of the main thread that a cancel stopped (None: none was)."""
    return _stopped_in


_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """Log our packages' INFO lines to stderr with timestamps (once per process).

    Only the ``jobs`` and ``trainforge`` loggers are configured: Ray and Ultralytics keep
    their own handlers, and everything on stderr reaches the shipped job log.
    """
    for name in ("jobs", "trainforge"):
        logger = logging.getLogger(name)
        if any(getattr(h, "_trainforge", False) for h in logger.handlers):
            continue
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._trainforge = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
