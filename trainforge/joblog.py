"""Ship a job's console output to the artifacts store while it runs.

The log must be readable through the API during the run and after the cluster is gone, so
the entrypoint captures its own file descriptors 1 and 2 (Ultralytics, Ray and our logging all
end up there), echoes them to the original console, and re-uploads the file every few seconds
and once more at exit. Object stores have no append; a whole-file re-upload of a log is cheap.

The shipped log is plain text: the terminal escape codes Ray's and Ultralytics' colours are
made of (``ESC[36m(RayTrainWorker pid=…)ESC[0m``) are taken out (:class:`AnsiStripper`); the
console echo keeps them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from trainforge.errors import StorageError
from trainforge.storage.base import ObjectStore

log = logging.getLogger(__name__)


#: Terminal escape sequences: CSI (colours, cursor moves: ``ESC[…m``), OSC (titles,
#: hyperlinks: ``ESC]…BEL``) and the two-byte ones.
_ESCAPE_PATTERN = r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])"
_ESCAPE_TEXT = re.compile(_ESCAPE_PATTERN)
_ESCAPE = re.compile(_ESCAPE_PATTERN.encode())
#: An escape sequence cut off at the end of a chunk (its rest comes with the next one).
_CUT = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?)?\Z")
#: A cut sequence longer than this is not one: it is passed on as it is.
_MAX_HELD = 256


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves, titles)."""
    return _ESCAPE_TEXT.sub("", text)


class AnsiStripper:
    """Takes terminal escape sequences out of a byte stream read in chunks of any size: a
    sequence split between two chunks is held back until its end arrives."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        """The plain bytes of ``chunk`` (and of what was held back from the one before)."""
        data = self._held + chunk
        cut = _CUT.search(data)
        if cut is not None and len(data) - cut.start() <= _MAX_HELD:
            data, self._held = data[:cut.start()], data[cut.start():]
        else:
            self._held = b""
        return _ESCAPE.sub(b"", data)

    def flush(self) -> bytes:
        """What is still held back (an unfinished sequence at the end of the stream)."""
        held, self._held = self._held, b""
        return held


class _Uploader(threading.Thread):
    def __init__(self, store: ObjectStore, key: str, path: Path, interval_s: float) -> None:
        super().__init__(name="log-shipper", daemon=True)
        self.store, self.key, self.path, self.interval_s = store, key, path, interval_s
        self.stop = threading.Event()
        self._last_size = -1

    def flush(self) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        if size == self._last_size:
            return
        try:
            self.store.upload(self.path, self.key, content_type="text/plain; charset=utf-8")
            self._last_size = size
        except StorageError as exc:  # a flaky store must not kill training
            log.warning("log upload to %s failed: %s", self.store.uri(self.key), exc)

    def run(self) -> None:
        while not self.stop.wait(self.interval_s):
            self.flush()


@contextlib.contextmanager
def ship_log(store: ObjectStore, key: str, *, interval_s: float = 5.0) -> Iterator[Path]:
    """Tee fds 1 and 2 into a file uploaded to ``key`` every ``interval_s`` and at exit.

    Args:
        store: the artifacts store.
        key: e.g. ``trainforge.layout.attempt_log_key(job_id, attempt)``.
        interval_s: seconds between uploads while the job runs.

    Yields:
        The local log file path.
    """
    fd, name = tempfile.mkstemp(prefix="trainforge-log-", suffix=".txt")
    os.close(fd)
    path = Path(name)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        plain = AnsiStripper()
        with path.open("ab", buffering=0) as sink:
            while chunk := os.read(read_end, 65536):
                sink.write(plain.feed(chunk))
                with contextlib.suppress(OSError):
                    os.write(saved_out, chunk)
            sink.write(plain.flush())

    reader = threading.Thread(target=pump, name="log-tee", daemon=True)
    reader.start()
    uploader = _Uploader(store, key, path, interval_s)
    uploader.start()
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        # Children that inherited the pipe may still hold it open: don't wait forever.
        reader.join(timeout=5)
        os.close(read_end) if not reader.is_alive() else None
        uploader.stop.set()
        uploader.join(timeout=10)
        uploader.flush()
        os.close(saved_out)
        os.close(saved_err)
        path.unlink(missing_ok=True)
