"""One local Ray head kept warm for the embedded server's jobs.

Without it every job started a private Ray of its own (``ray.init(address="local")``), 7-15 s
of its wall time on a laptop. ``trainforge serve`` owns one :class:`LocalRayHead` for its
lifetime: started on the first launch (a server that runs no job never starts Ray), stopped
when the server exits, its session logs under ``$TRAINFORGE_HOME/ray``. The local backend
points each job at it (``RAY_ADDRESS``, the head's token, ``TRAINFORGE_LOCAL_RAY=1``); the job
then connects in about a second and treats the head as its own machine
(jobs/core/ray_cluster.py). The head requires Ray's token authentication with a token made
for it, so no other process on the machine can run code on it, and runs in Ray's
single-machine mode, so every port of it (GCS, raylet, object manager, agents, metrics,
workers), and of the jobs' drivers, listens on loopback only.

The head runs with the same environment allow-list as the jobs themselves
(:func:`services.dispatcher.job_env.inherited_env`): its worker processes serve every
job, so nothing of the server's (secret key, database URL) may reach them; each job's own
variables travel in its runtime_env.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from services.dispatcher.job_env import inherited_env
from trainforge.errors import BackendError

log = logging.getLogger(__name__)

#: Ray keeps unix sockets under its temp dir, and a socket path may not exceed 107 bytes:
#: longer homes get a short directory in /tmp, linked from $TRAINFORGE_HOME/ray. The longest
#: is ``<temp>/session_<date>_<time>_<µs>_<pid>/sockets/plasma_store``: 64 bytes after the
#: temp dir with a 7-digit pid, so 43 at most for the temp dir itself.
_MAX_TEMP_DIR = 43
#: The jobs share the head's object store; training moves no large objects through it.
_OBJECT_STORE_BYTES = 512 * 1024**2
#: Ray's single-machine mode (named for the platforms where it is the default): Ray takes
#: 127.0.0.1 as the node's address instead of replacing it by the host's external one, binds
#: every server (GCS, raylet, object manager, agents, metrics, workers) to loopback, and
#: refuses any other node. The head and the drivers of the jobs that join it both need it.
_LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: How long the head may take to stop its processes on SIGTERM before they are killed. Nothing
#: on it needs draining when the server stops (a job still running fails and is retried by the
#: next server), and `ray start --block` would otherwise stop them one by one for up to 30 s.
_STOP_GRACE_S = 3.0


def _stop_with_parent() -> None:
    """In the child: SIGTERM when the thread that started it ends (Linux ``PR_SET_PDEATHSIG``).

    ``ray start --block`` stops its processes on SIGTERM; with this it does so however the
    server ends, a kill or uvicorn re-raising the signal it shut down on included, where no
    ``finally`` of the server runs.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRayHead:
    """``ray start --head --block`` on loopback, started lazily and stopped with its owner.

    Args:
        home: ``$TRAINFORGE_HOME``; the session logs go under ``home/ray``.
        num_cpus: CPUs the head advertises: enough for the jobs that may run at once to be
            scheduled together (Ray counts CPUs, it does not pin them), as each private Ray
            did before.
        start_timeout_s: how long the head may take to answer.
    """

    def __init__(self, home: Path, *, num_cpus: int, start_timeout_s: float = 120.0) -> None:
        self.home = home
        self.num_cpus = num_cpus
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._address: str | None = None
        self._token = ""

    @property
    def started(self) -> bool:
        return self._address is not None and self._process is not None \
            and self._process.poll() is None

    def job_env(self) -> dict[str, str]:
        """What a job needs to join the head, starting it first if need be: its address, its
        token (Ray's token authentication: no other local user's process can use it) and
        Ray's single-machine mode (the job's own Ray servers listen on loopback too).

        Raises:
            BackendError: Ray did not come up.
        """
        with self._lock:
            if not self.started:
                self._stop_locked()  # a head that died is replaced
                self._address = self._start()
            assert self._address is not None
            return {"RAY_ADDRESS": self._address, "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": self._token, **_LOOPBACK_ONLY}

    def _temp_dir(self) -> Path:
        link = self.home / "ray"
        if len(str(link)) <= _MAX_TEMP_DIR:
            if link.is_symlink():
                link.unlink()
            link.mkdir(parents=True, exist_ok=True)
            return link
        short = Path(tempfile.mkdtemp(prefix="tf-ray-", dir="/tmp"))
        if link.is_symlink():
            shutil.rmtree(os.path.realpath(link), ignore_errors=True)  # the previous server's
            link.unlink()
        elif link.exists():
            shutil.rmtree(link, ignore_errors=True)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(short)
        return short

    def _start(self) -> str:
        temp_dir = self._temp_dir()
        port = _free_port()
        bin_dir = Path(sys.executable).parent
        self._token = secrets.token_hex(32)
        env = inherited_env(os.environ)
        env.update({"PATH": f"{bin_dir}:{env.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self._token, **_LOOPBACK_ONLY,
                    # Fixed ports otherwise (44217, 44227), shared by every Ray on the machine.
                    "AUTOSCALER_METRIC_PORT": str(_free_port()),
                    "DASHBOARD_METRIC_PORT": str(_free_port())})
        command = [
            str(bin_dir / "ray"), "start", "--head", "--block", f"--port={port}",
            "--node-ip-address=127.0.0.1", "--include-dashboard=false",
            f"--ray-client-server-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--temp-dir={temp_dir}",
            f"--num-cpus={self.num_cpus}", f"--object-store-memory={_OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ]
        started = time.monotonic()
        with open(self.home / "ray-head.log", "ab") as output:
            self._process = subprocess.Popen(command, env=env, cwd=temp_dir, stdout=output,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True,
                                             preexec_fn=_stop_with_parent)
        address = f"127.0.0.1:{port}"
        while True:
            check = subprocess.run([str(bin_dir / "ray"), "health-check", "--address", address],
                                   env=env, capture_output=True, timeout=60)
            if check.returncode == 0:
                break
            if self._process.poll() is not None or \
                    time.monotonic() - started > self.start_timeout_s:
                self._stop_locked()
                raise BackendError(f"the local Ray head did not come up within "
                                   f"{self.start_timeout_s:.0f}s; see "
                                   f"{self.home / 'ray-head.log'} and {self.home / 'ray'}")
            time.sleep(0.5)
        log.info("local Ray head at %s in %.1fs (%d CPUs; logs in %s)", address,
                 time.monotonic() - started, self.num_cpus, self.home / "ray")
        return address

    def stop(self) -> None:
        """Stop the head and every process it started (never ``ray stop``: that would stop
        every Ray on the machine)."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        import psutil  # type: ignore[import-untyped]  # with Ray (embedded server only)

        process, self._process, self._address = self._process, None, None
        if process is None or process.poll() is not None:
            return
        try:
            family = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            family = []
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:  # it stops its processes one by one: finish the job
            process.kill()
            process.wait(timeout=15)
        for child in family:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=_STOP_GRACE_S)
        log.info("local Ray head stopped in %.1fs", time.monotonic() - started)
