"""Fixtures for dispatcher tests: the job store, a real API server jobs report to, backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.api import create_app
from services.api.settings import ApiSettings, TeamLimits
from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.dispatcher import Dispatcher
from services.store import Database, tokens
from tests.fixtures.dispatcher import SECRET, SPEC, ApiServer, config, standin_env
from tests.fixtures.jobstore import TEST_POLICY
from tests.fixtures.network import serve_app


@pytest.fixture(scope="session")
def api_server(database_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ApiServer]:
    """The API served by uvicorn on a free loopback port (jobs post their events here)."""
    home = tmp_path_factory.mktemp("api-home")
    artifacts = home / "artifacts"
    settings = ApiSettings(
        home=home, embedded=True, database_url=database_url,
        artifacts_uri=f"file://{artifacts}", secret_key=SECRET, migrate_on_startup=False,
        default_limits=TeamLimits(max_active_jobs=1000), stream_poll_s=0.1,
        storage_policy=TEST_POLICY,
    )
    with serve_app(create_app(settings)) as url:
        yield ApiServer(url, artifacts, settings)


@pytest.fixture()
def team_headers(db: Database) -> dict[str, str]:
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


@pytest.fixture()
def local_backend(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "state", module="tests.standin", env=standin_env(),
                        kill_grace_s=2.0)


@pytest.fixture()
def dispatcher(db: Database, local_backend: LocalBackend,
               api_server: ApiServer) -> Iterator[Dispatcher]:
    dispatcher = Dispatcher(db, local_backend, config(api_server))
    yield dispatcher
    dispatcher.close()  # scheduling leadership is per schema: the next test's dispatcher leads
