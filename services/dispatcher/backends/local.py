"""LocalBackend: runs a job's entrypoint as a subprocess on this host (the embedded default).

Each attempt gets a directory ``<state_dir>/<job id>/<attempt>/`` holding:

- ``launch.lock``: flock serialising launches of the attempt (threads and processes);
- ``run.lock``: flock held by the run for its whole life (see ``_local_runner``);
- ``pid``: the runner's pid (its process group: the runner leads its own session);
- ``output.log``: the entrypoint's stdout and stderr;
- ``cancel-requested``: written by :meth:`LocalBackend.cancel` (the time of the first request);
- ``sigterm-sent``: written once the run's process group got its one SIGTERM;
- ``exit.json``: the outcome, written by the runner when the entrypoint exits.

``launch`` is idempotent by (job id, attempt): if ``exit.json`` exists or ``run.lock`` is
held, the run already exists and its handle is returned; nothing is started twice, whichever
dispatcher process asks.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from services.dispatcher.backends.base import (
    TIMED_OUT,
    BackendState,
    BackendStatus,
    LaunchRequest,
)
from services.dispatcher.job_env import inherited_env
from services.dispatcher.local_runner import (
    CANCEL_MARKER,
    EXIT_FILE,
    LAUNCH_LOCK,
    OUTPUT_LOG,
    PID_FILE,
    RUN_LOCK,
    TERM_SENT,
    write_atomic,
)
from trainforge.constants import ENV_LOCAL_RAY
from trainforge.errors import BackendError

if TYPE_CHECKING:
    from services.dispatcher.local_ray import LocalRayHead

log = logging.getLogger(__name__)

_RUNNER = "services.dispatcher.local_runner"

class LocalBackend:
    """Runs entrypoints as local subprocesses.

    Args:
        state_dir: where attempt directories live (keep it across restarts).
        module: the module to run instead of ``jobs.<kind>``: a test suite's stand-in job
            (services/dispatcher/settings.py).
        python: interpreter for the runner and the entrypoint (default: this one, so the job
            sees the same installed packages as the dispatcher).
        env: extra environment for every run (on top of what it inherits from this
            process, :func:`inherited_env`, and under the request's own).
        cwd: working directory of the runs (default: each attempt's directory).
        kill_grace_s: after a cancel's SIGTERM, how long a run may take to stop before SIGKILL.
        ray_head: a warm local Ray every run joins (``trainforge serve``); None: each run
            starts a private one.
    """

    name = "local"
    #: A run's environment is its own, unless it joins the warm head: a job hands its
    #: variables to its Ray workers in its runtime_env, which the head's GCS keeps where every
    #: other job on the head can read it. Then the job token goes through the store instead.
    private_env = True

    def __init__(
        self,
        state_dir: Path,
        *,
        module: str | None = None,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        kill_grace_s: float = 10.0,
        ray_head: LocalRayHead | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.module = module
        self.python = python
        self.env = dict(env or {})
        self.cwd = cwd
        self.kill_grace_s = kill_grace_s
        self.ray_head = ray_head
        self.private_env = ray_head is None
        # Popen objects of runs this process started: polled so that they are reaped.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # --- helpers ---------------------------------------------------------------------------

    def _dir(self, handle: str) -> Path:
        job_id, sep, attempt = handle.partition("/")
        if not sep or not attempt.isdigit() or not job_id or "/" in job_id or job_id in {".", ".."}:
            raise BackendError(f"not a local run handle: {handle!r} (expected JOB_ID/ATTEMPT)")
        return self.state_dir / job_id / attempt

    def command(self, request: LaunchRequest) -> list[str]:
        """The entrypoint command line, with this backend's interpreter and module."""
        command = list(request.command)
        if command[:2] == ["python", "-m"]:
            command[0] = self.python
            if self.module is not None:
                command[2] = self.module
        return command

    @contextmanager
    def _launch_lock(self, directory: Path) -> Iterator[None]:
        fd = os.open(directory / LAUNCH_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _run_alive(directory: Path) -> bool:
        path = directory / RUN_LOCK
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops our probe lock, if we got it
        return False

    def _reap(self, handle: str, *, wait_s: float = 0.0) -> None:
        child = self._children.get(handle)
        if child is None:
            return
        try:
            child.wait(timeout=wait_s) if wait_s else child.poll()
        except subprocess.TimeoutExpired:
            return
        if child.returncode is not None:
            del self._children[handle]

    # --- Backend protocol ------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> str:
        """Start the attempt unless it already runs or ran; returns ``JOB_ID/ATTEMPT``."""
        handle = f"{request.job_id}/{request.attempt}"
        directory = self._dir(handle)
        directory.mkdir(parents=True, exist_ok=True)
        with self._launch_lock(directory):
            if (directory / EXIT_FILE).exists():
                log.info("launch %s: already ran", handle)
                return handle
            lock_fd = os.open(directory / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("launch %s: already running", handle)
                    return handle
                self._spawn(request, directory, lock_fd, handle)
            finally:
                # The runner holds its own copy of the locked descriptor from here on.
                os.close(lock_fd)
        return handle

    def _spawn(self, request: LaunchRequest, directory: Path, lock_fd: int, handle: str) -> None:
        (directory / PID_FILE).unlink(missing_ok=True)
        (directory / CANCEL_MARKER).unlink(missing_ok=True)
        (directory / TERM_SENT).unlink(missing_ok=True)
        env = {**inherited_env(os.environ), **self.env, **request.env, **request.secrets}
        if self.ray_head is not None:  # the embedded server's warm Ray: no `ray start` per job
            env.update(self.ray_head.job_env())
            env[ENV_LOCAL_RAY] = "1"
        workdir = self.cwd or directory / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            self.python, "-m", _RUNNER,
            "--dir", str(directory),
            "--lock-fd", str(lock_fd),
            "--timeout-s", str(request.timeout_s),
            "--", *self.command(request),
        ]
        with open(directory / OUTPUT_LOG, "ab") as output:
            child = subprocess.Popen(
                argv,
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(lock_fd,),
                start_new_session=True,
            )
        self._children[handle] = child
        log.info("launched %s (runner pid %d): %s", handle, child.pid,
                 " ".join(self.command(request)))

    def poll(self, handle: str) -> BackendStatus:
        self._reap(handle)
        directory = self._dir(handle)
        exit_file = directory / EXIT_FILE
        if exit_file.exists():
            self._reap(handle, wait_s=5.0)  # the runner exits right after writing the file
            if self.cwd is None:  # the run's scratch directory: nothing in it outlives the run
                shutil.rmtree(directory / "work", ignore_errors=True)
            outcome = json.loads(exit_file.read_text())
            code = int(outcome["returncode"])
            if outcome.get("cancelled"):
                return BackendStatus(BackendState.STOPPED, f"stopped on request (status {code})")
            if outcome.get("timed_out"):
                return BackendStatus(BackendState.FAILED, TIMED_OUT)
            if code == 0:
                return BackendStatus(BackendState.SUCCEEDED, "exited 0")
            return BackendStatus(BackendState.FAILED, f"exited with status {code}")
        if self._run_alive(directory):
            return BackendStatus(BackendState.RUNNING)
        if not directory.exists():
            return BackendStatus(BackendState.UNKNOWN, f"no local run {handle}")
        if self._run_alive(directory) or (directory / EXIT_FILE).exists():
            # The run finished between the two checks above.
            return self.poll(handle)
        return BackendStatus(
            BackendState.FAILED, "the run ended without recording an exit status (killed?)"
        )

    def cancel(self, handle: str) -> None:
        """Stop the run: one SIGTERM to its process group, SIGKILL once it has had
        ``kill_grace_s`` to stop. Called on every dispatcher loop until the run has exited.

        One SIGTERM only: the job stops its training at the first and then ships its log; a
        second could end it before the log's last upload (after ``ray.shutdown()`` a SIGTERM
        kills at once).
        """
        directory = self._dir(handle)
        if (directory / EXIT_FILE).exists() or not self._run_alive(directory):
            return
        marker = directory / CANCEL_MARKER
        if not marker.exists():
            write_atomic(marker, f"{time.time()}\n")
        try:
            pgid = int((directory / PID_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return  # the runner has not written its pid yet; the next cancel call will
        term_sent = directory / TERM_SENT
        if not term_sent.exists():
            sig = signal.SIGTERM
        elif time.time() - float(term_sent.read_text()) > self.kill_grace_s:
            sig = signal.SIGKILL
        else:
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGTERM:
            write_atomic(term_sent, f"{time.time()}\n")
        else:
            log.warning("run %s did not stop within %.0fs of its SIGTERM: killed", handle,
                        self.kill_grace_s)
        self._reap(handle)

    def logs(self, handle: str, *, limit_bytes: int = 64 * 1024) -> str:
        path = self._dir(handle) / OUTPUT_LOG
        try:
            with path.open("rb") as fh:
                fh.seek(max(path.stat().st_size - limit_bytes, 0))
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
