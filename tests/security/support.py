"""What several security tests share: a `trainforge serve` process over a private home running
tests.standin jobs (no training), the API as its own process (``python -m services.api``),
and a YAML bomb."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from tests.fixtures.api import SECRET
from tests.fixtures.embedded import ServeProcess
from tests.fixtures.network import free_port
from trainforge.datasets import synth

REPO = Path(__file__).resolve().parents[2]
#: yolov8n.yaml: the offline server (YOLO_OFFLINE=1) refuses the default yolov8n.pt at submit.
SPEC: dict[str, Any] = {"name": "ppe-detector", "model": {"base": "yolov8n.yaml"},
                        "train": {"epochs": 3}}


@dataclass
class Served:
    url: str
    home: Path
    dataset: Path
    env: dict[str, str]

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or (self.home / "dev-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}


def serve_env(home: Path, dataset: Path) -> dict[str, str]:
    """`trainforge serve`'s environment: tests.standin runs, every team may read ``dataset``."""
    path = os.environ.get("PYTHONPATH", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINFORGE_")}
    return {
        **env,
        "PYTHONPATH": f"{REPO}:{path}" if path else str(REPO),
        "YOLO_OFFLINE": "1",
        "TRAINFORGE_HOME": str(home),
        "TRAINFORGE_DISPATCHER_LOCAL_MODULE": "tests.standin",
        "TRAINFORGE_DISPATCHER_POLL_INTERVAL_S": "0.2",
        "TRAINFORGE_DISPATCHER_RETRY_DELAY_S": "0",
        # Local datasets for every team (only read by versions with a storage access policy).
        "TRAINFORGE_STORAGE_POLICY": f'{{"default": {{"datasets": ["file://{dataset}/"]}}}}',
    }


def _usual_umask() -> None:
    os.umask(0o022)  # what a login shell gives: files 0644, directories 0755


@contextmanager
def served(serve_process: ServeProcess, tmp_path: Path, home: Path) -> Iterator[Served]:
    """`trainforge serve` on a free loopback port, started with umask 022; stopped after."""
    dataset = tmp_path / "dataset"
    if not dataset.exists():  # a real one: the server checks its data.yaml at submit
        synth(dataset, classes=1, train=2, val=1, test=0, imgsz=32)
    env = serve_env(home, dataset)
    log_path = tmp_path / f"serve-{home.name}.log"
    try:
        with serve_process(env, log_path, preexec_fn=_usual_umask) as url:
            yield Served(url, home, dataset, env)
    finally:
        print(log_path.read_text()[-4000:])


def submit(server: Served, name: str, token: str | None = None) -> str:
    body = {"spec": {**SPEC, "name": name, "dataset": {"uri": f"file://{server.dataset}/"}}}
    response = httpx.post(f"{server.url}/v1/jobs", json=body, headers=server.headers(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job(server: Served, job_id: str, token: str | None = None) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers(token))
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(server: Served, job_id: str, states: set[str], token: str | None = None,
             timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (got := job(server, job_id, token))["state"] not in states:
        assert time.monotonic() < deadline, f"{job_id} still {got['state']}, not in {states}"
        time.sleep(0.2)
    return got


def billion_laughs(levels: int = 9, fan_out: int = 9, key: str = "names") -> str:
    """The classic: each anchor is a list of ``fan_out`` aliases of the previous one."""
    items = ", ".join(['"lol"'] * fan_out)
    lines = [f"a0: &a0 [{items}]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * fan_out)}]")
    lines.append(f"{key}: *a{levels}")
    return "\n".join(lines) + "\n"


class ApiProcess:
    """``python -m services.api`` on a free loopback port, its output in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {**os.environ, **env, "TRAINFORGE_API_HOST": "127.0.0.1",
                    "TRAINFORGE_API_PORT": str(self.port), "TRAINFORGE_API_WORKERS": "1",
                    "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout_s: float = 90) -> None:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.api"], cwd=REPO,
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the API did not start:\n{self.log()}"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log is not None:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_mb(self) -> float:
        """VmHWM: the most resident memory the server process has used since it started."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")


def api_env(tmp_path: Path, database_url: str, artifacts: Path,
            readable: tuple[str, ...] = ("file:///", "s3://datasets/")) -> dict[str, str]:
    """TRAINFORGE_* settings of an embedded API on the test job store."""
    policy = {"default": {"datasets": list(readable), "weights": list(readable)}}
    return {
        "TRAINFORGE_EMBEDDED": "true",
        "TRAINFORGE_HOME": str(tmp_path / "home"),
        "TRAINFORGE_DATABASE_URL": database_url,
        "TRAINFORGE_ARTIFACTS_URI": f"file://{artifacts}",
        "TRAINFORGE_SECRET_KEY": SECRET.decode(),
        "TRAINFORGE_MIGRATE_ON_STARTUP": "false",  # the database_url fixture migrated it
        "TRAINFORGE_STORAGE_POLICY": json.dumps(policy),
        "TRAINFORGE_LOG_LEVEL": "info",
        "TRAINFORGE_API_ACCESS_LOG": "true",
    }


@contextmanager
def serve_api(env: dict[str, str], log_path: Path) -> Iterator[ApiProcess]:
    server = ApiProcess(env, log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()
