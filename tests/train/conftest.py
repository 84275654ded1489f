"""Fixtures for the training job: a recording job-events API, a Ray head, tiny datasets."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RecordingAPI:
    """The API's job-events route, recording what jobs post (per job id).

    ``on_event(job_id, event)`` runs in the server thread for every event received.
    """

    url: str
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def of(self, job_id: str, type_: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            events = list(self.events.get(job_id, []))
        return [e for e in events if type_ is None or e["type"] == type_]

    def states(self, job_id: str) -> list[str]:
        return [e["state"] for e in self.of(job_id, "state")]

    def final_state(self, job_id: str) -> dict[str, Any]:
        states = self.of(job_id, "state")
        assert states, f"job {job_id} posted no StateEvent"
        return states[-1]

    def epochs(self, job_id: str) -> list[int]:
        return [e["epoch"] for e in self.of(job_id, "progress")]

    def message(self, job_id: str, text: str) -> list[dict[str, Any]]:
        return [e for e in self.of(job_id, "message") if e["message"].startswith(text)]


@pytest.fixture()
def recording_api() -> Iterator[RecordingAPI]:
    """An HTTP server on loopback standing in for POST /internal/v1/jobs/{id}/events."""
    port = free_port()
    api = RecordingAPI(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            parts = self.path.strip("/").split("/")
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if parts[:3] != ["internal", "v1", "jobs"] or parts[4:] != ["events"]:
                self.send_response(404)
                self.end_headers()
                return
            job_id, event = parts[3], json.loads(body)
            with api.lock:
                api.events.setdefault(job_id, []).append(event)
                api.tokens.setdefault(job_id, set()).add(self.headers.get("Authorization", ""))
            if api.on_event is not None:
                api.on_event(job_id, event)
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class RayHead:
    address: str  # GCS address, for RAY_ADDRESS / ray.init
    dashboard_url: str  # Jobs API
    temp_dir: str  # Ray's --temp-dir: its session logs are under session_latest/logs

    def log_digest(self, max_chars: int = 6000) -> str:
        """The lines of Ray's own logs that say why something died, for failure messages.

        An actor that "died unexpectedly" leaves its reason only there (worker stderr, the
        raylet's log), not in the job's output.
        """
        logs = Path(self.temp_dir) / "session_latest" / "logs"
        telling = ("error", "traceback", "exception", "killed", "died", "exit", "oom",
                   "signal", "fatal")
        # Workers' own logs first (where an actor's death is explained), then the raylet's;
        # the runtime-env agent's and the state dumps only repeat configuration.
        paths = sorted(logs.glob("worker-*")) + sorted(logs.glob("python-core-worker-*")) + \
            [logs / "raylet.out", logs / "raylet.err", logs / "gcs_server.out"] \
            if logs.is_dir() else []
        lines = []
        for path in paths:
            if not path.is_file():
                continue
            for line in path.read_text(errors="replace").splitlines():
                if "[state-dump]" not in line and any(w in line.lower() for w in telling):
                    lines.append(f"{path.name}: {line[:400]}")
        digest = "\n".join(lines)
        return digest[-max_chars:] if digest else f"(no telling lines under {logs})"


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """``ray start --head`` on loopback with free ports and the dashboard (Jobs API).

    Stopped by terminating the ``ray start --block`` process we started, then killing any of
    its descendants still alive (never ``ray stop``, which would stop every Ray on the host).
    """
    import psutil
    from ray.job_submission import JobSubmissionClient

    port, dashboard = free_port(), free_port()
    # Ray's unix sockets live under the temp dir: keep its path short.
    temp_dir = tempfile.mkdtemp(prefix="tf-ray-", dir="/tmp")
    ray = str(Path(sys.executable).parent / "ray")
    # Token auth off: clients here (jobs, the Jobs API client) would otherwise need the
    # cluster's token; the backend passes RAY_AUTH_* through for clusters that use one.
    # No PYTHONPATH: jobs reach trainforge/jobs only through what they ship (py_modules), as
    # on a real cluster. `python` resolves to this interpreter, as in the training image.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update({"PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
                "YOLO_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"})
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={free_port()}",
         f"--ray-client-server-port={free_port()}", f"--temp-dir={temp_dir}",
         "--num-cpus=2", "--num-gpus=0", "--object-store-memory=200000000",
         "--disable-usage-stats"],
        env=env, cwd=temp_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 180
    while True:
        try:
            JobSubmissionClient(url).list_jobs()
            break
        except Exception as exc:  # not up yet: connection refused, 5xx…
            if head.poll() is not None or time.monotonic() > deadline:
                head.kill()
                raise RuntimeError(f"ray head did not come up: {exc}") from exc
            time.sleep(1)
    try:
        yield RayHead(address=f"127.0.0.1:{port}", dashboard_url=url, temp_dir=temp_dir)
    finally:
        family = psutil.Process(head.pid).children(recursive=True) if head.poll() is None else []
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:  # it stops its processes one by one: finish the job
            head.kill()
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def make_dataset(dest: Path, *, train: int = 32, val: int = 8, test: int = 8,
                 imgsz: int = 64, variant: int = 0, seed: int = 0) -> Path:
    from trainforge.datasets import synth

    return synth(dest, train=train, val=val, test=test, imgsz=imgsz, variant=variant, seed=seed,
                 classes=3)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 train / 8 val / 8 test synthetic images at 64 px (three shape classes)."""
    return make_dataset(tmp_path_factory.mktemp("data") / "shapes")


def tiny_spec(dataset_uri: str, **overrides: Any) -> dict[str, Any]:
    """A train spec that runs in seconds on a CPU."""
    spec: dict[str, Any] = {
        "kind": "train",
        "name": "shapes",
        "dataset": {"uri": dataset_uri},
        "model": {"base": "yolov8n.yaml"},
        "train": {"epochs": 2, "imgsz": 64, "batch": 16, "workers": 0, "warmup_epochs": 0,
                  "optimizer": "SGD", "lr0": 0.02, "amp": False,
                  "augment": {"mosaic": 0.0, "close_mosaic": 0}},
        "resources": {"gpus": 0, "cpus": 1},
        "retries": 0,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


@dataclass
class JobRun:
    job_id: str
    returncode: int
    output: str


#: The team JobRunner's jobs belong to: they publish under ``<models>/vision/``.
TEAM = "vision"


@dataclass
class JobRunner:
    """Runs ``python -m <module> --spec URI`` as the dispatcher would: with the job's team,
    its access rules (local paths, the given S3 prefixes) and the spec's sha256."""

    home: Path
    artifacts_uri: str
    models_uri: str
    api: RecordingAPI
    env: dict[str, str] = field(default_factory=dict)
    module: str = "jobs.train"  # the job entrypoint (jobs.sweep reuses this runner)
    readable: tuple[str, ...] = ("file:///", "s3://tf-datasets/")
    _sha256: dict[str, str] = field(default_factory=dict)

    def write_spec(self, job_id: str, spec: dict[str, Any]) -> str:
        from trainforge import layout
        from trainforge.storage import join_key, open_location

        store, base = open_location(self.artifacts_uri.rstrip("/") + "/")
        key = join_key(base, layout.spec_key(job_id))
        body = json.dumps(spec).encode()
        store.put(key, body, content_type="application/json")
        self._sha256[job_id] = hashlib.sha256(body).hexdigest()
        return store.uri(key)

    def access_env(self) -> str:
        """TRAINFORGE_JOB_ACCESS for team :data:`TEAM` reading :attr:`readable`."""
        from trainforge.access import AccessRules, TeamAccess

        access = TeamAccess(datasets=self.readable, weights=self.readable)
        return AccessRules.build(TEAM, access, local_paths=True, reserved={}).to_env()

    def spec_sha256(self, job_id: str) -> str:
        """The sha256 of the spec :meth:`write_spec` wrote for ``job_id``."""
        return self._sha256[job_id]

    def manifest_uri(self, name: str, version: str) -> str:
        """Where the job publishes ``name@version`` (the team's registry)."""
        return f"{self.models_uri.rstrip('/')}/{TEAM}/{name}/{version}/manifest.json"

    def start(self, job_id: str, spec: dict[str, Any], *, attempt: int = 1,
              **env: str) -> subprocess.Popen[str]:
        spec_uri = self.write_spec(job_id, spec)
        full_env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "YOLO_OFFLINE": "1",
            "TRAINFORGE_HOME": str(self.home),
            "TRAINFORGE_ARTIFACTS_URI": self.artifacts_uri,
            "TRAINFORGE_MODELS_URI": self.models_uri,
            "TRAINFORGE_API_URL": self.api.url,
            "TRAINFORGE_JOB_ID": job_id,
            "TRAINFORGE_JOB_TOKEN": f"token-{job_id}",
            "TRAINFORGE_ATTEMPT": str(attempt),
            "TRAINFORGE_JOB_TEAM": TEAM,
            "TRAINFORGE_JOB_ACCESS": self.access_env(),
            "TRAINFORGE_SPEC_SHA256": self.spec_sha256(job_id),
            **self.env,
            **env,
        }
        return subprocess.Popen(
            [sys.executable, "-m", self.module, "--spec", spec_uri], cwd=REPO, env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

    def run(self, job_id: str, spec: dict[str, Any], *, attempt: int = 1,
            timeout: float = 600, **env: str) -> JobRun:
        proc = self.start(job_id, spec, attempt=attempt, **env)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
            raise AssertionError(f"job {job_id} ran over {timeout}s:\n{output[-5000:]}") from None
        return JobRun(job_id, proc.returncode, output)


@pytest.fixture()
def local_runner(tmp_path: Path, recording_api: RecordingAPI) -> JobRunner:
    """Artifacts and models in local directories; the job starts its own local Ray."""
    return JobRunner(home=tmp_path / "home", artifacts_uri=f"file://{tmp_path}/artifacts",
                     models_uri=f"file://{tmp_path}/models", api=recording_api)


@pytest.fixture()
def cluster_runner(tmp_path: Path, recording_api: RecordingAPI, ray_head: RayHead) -> JobRunner:
    """Jobs on the session's Ray head (RAY_ADDRESS), artifacts and models on local disk.

    RAY_AUTH_MODE matches the head's (no token), whatever this process's environment says.
    """
    return JobRunner(home=tmp_path / "home", artifacts_uri=f"file://{tmp_path}/artifacts",
                     models_uri=f"file://{tmp_path}/models", api=recording_api,
                     env={"RAY_ADDRESS": ray_head.address, "RAY_AUTH_MODE": "disabled"})


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())
