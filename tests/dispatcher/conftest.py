"""Fixtures for dispatcher tests: the job store, a real API server jobs report to, backends."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn

from services.api import create_app
from services.api.settings import ApiSettings, TeamLimits
from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.dispatcher import Dispatcher, DispatcherConfig
from services.store import Database, tokens
from services.store import jobs as repo
from services.store.domain import Job
from tests.conftest import free_port
from tests.jobstore import database_url, db  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[2]
SECRET = "dispatcher-test-secret-key"
SPEC = {"name": "ppe-detector", "dataset": {"uri": "s3://datasets/ppe/v3/"}, "train": {"epochs": 3}}


@dataclass
class ApiServer:
    url: str
    artifacts: Path
    settings: ApiSettings


@pytest.fixture(scope="session")
def api_server(database_url: str, tmp_path_factory: pytest.TempPathFactory  # noqa: F811
               ) -> Iterator[ApiServer]:
    """The API served by uvicorn on a free loopback port (jobs post their events here)."""
    home = tmp_path_factory.mktemp("api-home")
    artifacts = home / "artifacts"
    settings = ApiSettings(
        home=home, embedded=True, database_url=database_url,
        artifacts_uri=f"file://{artifacts}", secret_key=SECRET, migrate_on_startup=False,
        default_limits=TeamLimits(max_active_jobs=1000), stream_poll_s=0.1,
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield ApiServer(url, artifacts, settings)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def team_headers(db: Database) -> dict[str, str]:  # noqa: F811
    with db.transaction() as session:
        token = tokens.create_token(session, "vision")[1]
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def submit(api_server: ApiServer, team_headers: dict[str, str]) -> Callable[..., str]:
    """Submit a job over HTTP; returns its id."""

    def do(name: str = "ppe-detector", **spec: object) -> str:
        body = {"spec": {**SPEC, "name": name, **spec}}
        response = httpx.post(f"{api_server.url}/v1/jobs", json=body, headers=team_headers)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return do


def config(api_server: ApiServer, **overrides: object) -> DispatcherConfig:
    values: dict[str, object] = {
        "api_url": api_server.url,
        "secret_key": SECRET.encode(),
        "artifacts_uri": f"file://{api_server.artifacts}",
        "models_uri": f"file://{api_server.artifacts.parent / 'models'}",
        "retry_delay": timedelta(0),
        "launch_grace": timedelta(seconds=30),
    }
    values.update(overrides)
    return DispatcherConfig(**values)  # type: ignore[arg-type]


def standin_env() -> dict[str, str]:
    """Environment for stand-in runs: this checkout importable, no network for Ultralytics."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT), "YOLO_OFFLINE": "1"}


@pytest.fixture()
def local_backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "state", module="jobs.standin", env=standin_env(),
                        kill_grace_s=2.0)


@pytest.fixture()
def dispatcher(db: Database, local_backend: LocalBackend,  # noqa: F811
               api_server: ApiServer) -> Dispatcher:
    return Dispatcher(db, local_backend, config(api_server))


def jobs(database: Database, *job_ids: str) -> list[Job]:
    with database.transaction() as session:
        return [repo.get_job(session, job_id, team=None) for job_id in job_ids]


def drive(dispatcher: Dispatcher, done: Callable[[], bool], *, timeout_s: float = 120,
          interval_s: float = 0.1) -> None:
    """Run dispatcher loops until ``done()`` (fails the test after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {timeout_s}s")
        dispatcher.run_once()
        time.sleep(interval_s)


def run_markers(artifacts: Path, job_id: str) -> dict[int, int]:
    """How many times each attempt of a job really started (jobs.standin's markers)."""
    counts: dict[int, int] = {}
    for marker in (artifacts / "jobs" / job_id / "attempts").glob("*/runs/*"):
        attempt = int(marker.parent.parent.name)
        counts[attempt] = counts.get(attempt, 0) + 1
    return counts
