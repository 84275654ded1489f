"""Ship a job's log to the artifacts store while it runs: ``jobs/<id>/attempts/<n>/log.txt``.

Object stores cannot append, so the log is written to a local file and the whole file is
uploaded again every few seconds (when it changed) and once more on exit. The API's
``GET /v1/jobs/{id}/logs`` reads that object.

Example::

    with ship_log():          # job id, attempt and artifacts URI from the dispatcher's env
        train(...)
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from trainforge.constants import ENV_ARTIFACTS_URI, ENV_ATTEMPT, ENV_JOB_ID
from trainforge.errors import StorageError
from trainforge.layout import attempt_log_key
from trainforge.storage import join_key, open_location

log = logging.getLogger(__name__)


class _Tee(io.TextIOBase):
    """Writes to the original stream and to the log file."""

    def __init__(self, original: TextIO, copy: TextIO) -> None:
        self._original = original
        self._copy = copy

    def write(self, text: str) -> int:
        self._original.write(text)
        self._copy.write(text)
        return len(text)

    def flush(self) -> None:
        self._original.flush()
        self._copy.flush()

    def isatty(self) -> bool:
        return False


@contextmanager
def ship_log(
    job_id: str | None = None,
    attempt: int | None = None,
    artifacts_uri: str | None = None,
    *,
    interval_s: float = 5.0,
) -> Iterator[Path]:
    """Tee stdout, stderr and logging records to a file and upload it periodically.

    Args:
        job_id: default ``$TRAINFORGE_JOB_ID``.
        attempt: default ``$TRAINFORGE_ATTEMPT`` (or 1).
        artifacts_uri: default ``$TRAINFORGE_ARTIFACTS_URI``. Without it (or a job id) the log
            is only written locally.
        interval_s: seconds between uploads.

    Yields:
        The local log file.
    """
    job_id = job_id or os.environ.get(ENV_JOB_ID)
    attempt = attempt or int(os.environ.get(ENV_ATTEMPT) or 1)
    artifacts_uri = artifacts_uri or os.environ.get(ENV_ARTIFACTS_URI)
    fd, name = tempfile.mkstemp(prefix="trainforge-log-", suffix=".txt")
    path = Path(name)
    stream = os.fdopen(fd, "w", buffering=1, encoding="utf-8", errors="replace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(saved[0], stream), _Tee(saved[1], stream)
    stop = threading.Event()
    uploader: threading.Thread | None = None
    if job_id and artifacts_uri:
        store, prefix = open_location(artifacts_uri.rstrip("/") + "/")
        key = join_key(prefix, attempt_log_key(job_id, attempt))
        state = {"size": -1}

        def upload() -> None:
            stream.flush()
            size = path.stat().st_size
            if size == state["size"]:
                return
            try:
                store.upload(path, key, content_type="text/plain; charset=utf-8")
                state["size"] = size
            except StorageError as exc:  # a log upload must never kill the job
                log.debug("log upload to %s failed: %s", store.uri(key), exc)

        def loop() -> None:
            while not stop.wait(interval_s):
                upload()

        uploader = threading.Thread(target=loop, name="ship-log", daemon=True)
        uploader.start()
    try:
        yield path
    finally:
        sys.stdout, sys.stderr = saved
        root.removeHandler(handler)
        stop.set()
        if uploader is not None:
            uploader.join()
            upload()
        stream.close()
        path.unlink(missing_ok=True)
