"""Ultralytics' failures as trainforge's errors.

Ultralytics raises bare Exceptions and AssertionErrors (a missing file, a network problem, a
TensorRT build, a validator that cannot read a model); the adapter turns them into the
trainforge error its caller reports (trainforge/errors.py), with the exception's type and
message kept, so that no job kind catches Ultralytics' exceptions itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from trainforge.errors import TrainforgeError


@contextmanager
def raised_as(error: type[TrainforgeError], what: str, *,
              keep: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Run Ultralytics; an exception it raises becomes ``error("<what>: <type>: <message>")``.

    trainforge's own errors, and the adapter's own (``keep``), pass unchanged.
    """
    passing: tuple[type[Exception], ...] = (TrainforgeError, *keep)
    try:
        yield
    except passing:
        raise
    except Exception as exc:
        raise error(f"{what}: {type(exc).__name__}: {exc}") from exc
