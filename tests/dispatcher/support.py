"""Helpers shared by the dispatcher tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from services.api.settings import ApiSettings
from services.dispatcher.dispatcher import Dispatcher, DispatcherConfig
from services.store import Database
from services.store import jobs as repo
from services.store.domain import Job
from tests.jobstore import open_access

ROOT = Path(__file__).resolve().parents[2]
SECRET = "dispatcher-test-secret-key"
SPEC = {"name": "ppe-detector", "dataset": {"uri": "s3://datasets/ppe/v3/"}, "train": {"epochs": 3}}


@dataclass
class ApiServer:
    url: str
    artifacts: Path
    settings: ApiSettings


def config(api_server: ApiServer, **overrides: object) -> DispatcherConfig:
    """A dispatcher configuration for jobs that report to ``api_server``."""
    values: dict[str, object] = {
        "api_url": api_server.url,
        "secret_key": SECRET.encode(),
        "artifacts_uri": f"file://{api_server.artifacts}",
        "models_uri": f"file://{api_server.artifacts.parent / 'models'}",
        "retry_delay": timedelta(0),
        "launch_grace": timedelta(seconds=30),
        "access_for": open_access,
    }
    values.update(overrides)
    return DispatcherConfig(**values)  # type: ignore[arg-type]


def standin_env() -> dict[str, str]:
    """Environment for stand-in runs: this checkout importable, no network for Ultralytics."""
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT), "YOLO_OFFLINE": "1"}


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
    """How many times each attempt of a job really started (tests.standin's markers)."""
    counts: dict[int, int] = {}
    for marker in (artifacts / "jobs" / job_id / "attempts").glob("*/runs/*"):
        attempt = int(marker.parent.parent.name)
        counts[attempt] = counts.get(attempt, 0) + 1
    return counts
