"""Each step of a job logs exactly one outcome line with its duration."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("jobs.core.steps")


class Outcome:
    """What a step reports about itself; set ``text`` before the step ends."""

    def __init__(self) -> None:
        self.text = "done"


@contextmanager
def step(name: str) -> Iterator[Outcome]:
    """Time a step and log ``step <name>: <outcome> (<seconds>s)`` or its failure.

    Args:
        name: a short step name (``dataset-sync``, ``train``…).

    Yields:
        An :class:`Outcome` whose ``text`` becomes the log line.
    """
    outcome = Outcome()
    started = time.perf_counter()
    try:
        yield outcome
    except BaseException as exc:
        log.error("step %s: FAILED after %.2fs: %s", name, time.perf_counter() - started,
                  str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    log.info("step %s: %s (%.2fs)", name, outcome.text, time.perf_counter() - started)


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
