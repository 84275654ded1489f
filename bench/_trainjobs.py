"""Helpers shared by the training benchmarks: run a job entrypoint (``python -m jobs.train``,
``jobs.sweep``) like the dispatcher does, with a loopback stand-in for the API's job-events
route."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainforge.access import EMBEDDED_TEAM

if TYPE_CHECKING:
    import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(home: Path, port: int, log_path: Path,
                **env: str) -> subprocess.Popen[bytes]:
    """`trainforge serve` of this checkout on ``port`` with its own ``home`` (and ``env`` on
    top), none of the caller's trainforge or Ray settings; its output goes to ``log_path``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINFORGE_", "RAY_"))}
    full.update({"PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1", "TRAINFORGE_HOME": str(home),
                 **env})
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "trainforge", "serve", "--port",
                                 str(port)], env=full, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, server: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Until the server at ``url`` answers /readyz (raises if it exits or takes too long)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        if server.poll() is not None:
            raise RuntimeError("trainforge serve exited")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("trainforge serve did not become ready")
        time.sleep(0.2)


#: A job's states once it has ended.
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def wait_for_end(client: httpx.Client, job: str, *, timeout_s: float = 1800,
                 poll_s: float = 0.5) -> str:
    """Poll ``GET /v1/jobs/{job}`` until the job has ended; returns its final state.

    Raises:
        RuntimeError: it has not ended within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while (state := client.get(f"/v1/jobs/{job}").json()["state"]) not in TERMINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job} still {state} after {timeout_s:.0f}s")
        time.sleep(poll_s)
    return str(state)


@dataclass
class EventRecorder:
    """Receives POST /internal/v1/jobs/{id}/events; stamps each event with its arrival time."""

    url: str = ""
    events: dict[str, list[tuple[float, dict[str, Any]]]] = field(default_factory=dict)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> EventRecorder:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                job_id = self.path.strip("/").split("/")[3]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with recorder.arrived:
                    recorder.events.setdefault(job_id, []).append((time.monotonic(), body))
                    recorder.arrived.notify_all()
                self.send_response(202)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        port = free_port()
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    def first(self, job_id: str, kind: str, state: str | None = None,
              timeout: float = 120) -> float | None:
        """Arrival time of the job's first event of that kind (and state), waiting for it."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for at, event in self.events.get(job_id, []):
                    if event["type"] == kind and (state is None or event.get("state") == state):
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.arrived.wait(left)


#: The team bench jobs run as: the embedded server's, which may read local paths.
TEAM = EMBEDDED_TEAM


def access_env(home: Path) -> str:
    """TRAINFORGE_JOB_ACCESS as the embedded server's dispatcher sets it for :data:`TEAM`
    (its own ``StoreSettings.access_for``: the embedded storage policy, local paths readable).
    A job launched without it may read nothing (jobs/core/runtime.py)."""
    from services.store.settings import StoreSettings

    return StoreSettings(embedded=True, home=home).access_for(TEAM).to_env()


def job_env(home: Path, api_url: str, job_id: str, spec_sha256: str,
            **extra: str) -> dict[str, str]:
    """The environment the dispatcher gives a job (embedded default: stores under home)."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "YOLO_OFFLINE": "1",
        "TRAINFORGE_HOME": str(home),
        "TRAINFORGE_ARTIFACTS_URI": f"file://{home}/artifacts",
        "TRAINFORGE_MODELS_URI": f"file://{home}/models",
        "TRAINFORGE_API_URL": api_url,
        "TRAINFORGE_JOB_ID": job_id,
        "TRAINFORGE_JOB_TOKEN": "bench",
        "TRAINFORGE_ATTEMPT": "1",
        "TRAINFORGE_JOB_TEAM": TEAM,
        "TRAINFORGE_JOB_ACCESS": access_env(home),
        "TRAINFORGE_SPEC_SHA256": spec_sha256,
        **extra,
    }


def team_cache(home: Path) -> Path:
    """The node cache the bench jobs' team syncs datasets into."""
    return home / "cache" / "datasets" / TEAM


def write_spec(home: Path, job_id: str, spec: dict[str, Any]) -> tuple[Path, str]:
    """Write a job's spec.json; returns its path and sha256 (as the API records it)."""
    path = home / "artifacts" / "jobs" / job_id / "spec.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(spec).encode()
    path.write_bytes(body)
    return path, hashlib.sha256(body).hexdigest()


def start_job(home: Path, api_url: str, job_id: str, spec: dict[str, Any], *,
              module: str = "jobs.train", **env: str) -> subprocess.Popen[bytes]:
    """Start ``python -m <module> --spec <spec.json>`` with :func:`job_env` (plus ``env``)."""
    spec_path, sha = write_spec(home, job_id, spec)
    return subprocess.Popen([sys.executable, "-m", module, "--spec", str(spec_path)],
                            cwd=REPO, env=job_env(home, api_url, job_id, sha, **env),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_job(home: Path, api_url: str, job_id: str, spec: dict[str, Any], *,
            module: str = "jobs.train", **env: str) -> float:
    """Run a job to completion; returns its wall time. Raises if it fails."""
    started = time.perf_counter()
    proc = start_job(home, api_url, job_id, spec, module=module, **env)
    if proc.wait() != 0:
        log = home / "artifacts" / "jobs" / job_id / "attempts" / "1" / "log.txt"
        tail = log.read_text()[-4000:] if log.exists() else "(no log)"
        raise RuntimeError(f"job {job_id} failed (exit {proc.returncode}):\n{tail}")
    return time.perf_counter() - started


def report(home: Path, job_id: str) -> dict[str, Any]:
    path = home / "artifacts" / "jobs" / job_id / "train" / "report.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data
