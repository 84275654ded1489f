"""Ship a job's console output to the artifacts store while it runs.

The log must be readable through the API during the run and after the cluster is gone, so
the entrypoint captures its own file descriptors 1 and 2 (Ultralytics, Ray and our logging all
end up there), echoes them to the original console, and re-uploads the file every few seconds
and once more at exit. Object stores have no append; a whole-file re-upload of a log is cheap.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from trainforge.errors import StorageError
from trainforge.storage.base import ObjectStore

log = logging.getLogger(__name__)


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
        with path.open("ab", buffering=0) as sink:
            while chunk := os.read(read_end, 65536):
                sink.write(chunk)
                with contextlib.suppress(OSError):
                    os.write(saved_out, chunk)

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
