"""Fixtures for API tests: the app on a real job store (SQLite and PostgreSQL), tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api import create_app
from services.api.settings import ApiSettings
from services.store import Database, tokens
from tests.api.support import SECRET
from tests.conftest import serve_app
from tests.jobstore import TEST_POLICY, artifacts_dir, database_url, db  # noqa: F401


@pytest.fixture()
def settings(tmp_path: Path, database_url: str, artifacts_dir: Path) -> ApiSettings:  # noqa: F811
    return ApiSettings(
        home=tmp_path / "home",
        embedded=True,
        storage_policy=TEST_POLICY,
        database_url=database_url,
        artifacts_uri=f"file://{artifacts_dir}",
        secret_key=SECRET.decode(),
        migrate_on_startup=False,
        stream_poll_s=0.05,
        stream_max_s=10,
        token_cache_s=0,  # revocations take effect at once (test_auth covers the cache)
    )


@pytest.fixture()
def app(settings: ApiSettings, db: Database) -> FastAPI:  # noqa: F811
    return create_app(settings)


@pytest.fixture()
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture()
def make_token(db: Database) -> Callable[[str], str]:  # noqa: F811
    """Mint a token for a team; returns the plaintext bearer token."""

    def make(team: str) -> str:
        with db.transaction() as session:
            return tokens.create_token(session, team)[1]

    return make


@pytest.fixture()
def auth(make_token: Callable[[str], str]) -> dict[str, str]:
    """Authorization header of a token for team ``vision``."""
    return {"Authorization": f"Bearer {make_token('vision')}"}


@pytest.fixture()
def live_url(app: FastAPI) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port (for the HTTP client)."""
    with serve_app(app) as url:
        yield url
