"""Job-store fixtures shared by tests/api and tests/dispatcher (imported by their conftests).

``database_url`` is parametrised over SQLite (a file per session) and the real PostgreSQL
server (a fresh schema per session, dropped at the end); ``db`` empties every table before
each test so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from services.store import Database, upgrade
from trainforge.access import AccessRules, StoragePolicy, TeamAccess

#: The storage access policy of API and dispatcher tests: every team may read the S3 test
#: prefixes and local paths (tests of the policy itself build their own; see tests/security).
TEST_POLICY = StoragePolicy(default=TeamAccess(
    datasets=("s3://datasets/", "s3://d/", "s3://b/", "file:///"),
    weights=("s3://models/", "file:///"),
))


def open_access(team: str) -> AccessRules:
    """:data:`TEST_POLICY` for ``team``, local paths allowed (no reserved locations)."""
    return AccessRules.build(team, TEST_POLICY.for_team(team), local_paths=True, reserved={})


PG_SERVER = os.environ.get("TRAINFORGE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TABLES = ("webhook_deliveries", "webhook_events", "webhooks", "schedule_runs", "schedules",
          "idempotency_keys", "job_trials", "job_attempts", "job_events", "jobs", "api_tokens")


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_SERVER, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL at {PG_SERVER} is not reachable: {exc}"


def pg_schema_url(schema: str) -> str:
    # synchronous_commit=off: commits don't wait for the WAL flush. Same semantics (only a
    # server crash could lose the last commits), several times faster on this test box.
    return f"{PG_SERVER}?options=-csearch_path%3D{schema}%20-csynchronous_commit%3Doff"


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[str]:
    """A migrated, empty job store: SQLite file or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "trainforge.db"
        url = f"sqlite:///{path}"
        database = Database(url)
        upgrade(database.engine)
        database.dispose()
        yield url
        return
    reason = _pg_reachable()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    schema = f"tf_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = pg_schema_url(schema)
    database = Database(url)
    upgrade(database.engine)
    database.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def empty_tables(database: Database) -> None:
    with database.transaction() as session:
        for table in TABLES:
            session.execute(text(f"DELETE FROM {table}"))


@pytest.fixture()
def db(database_url: str) -> Iterator[Database]:
    """The job store, emptied before the test; disposed after it."""
    database = Database(database_url, pool_size=5)
    empty_tables(database)
    yield database
    database.dispose()


@pytest.fixture()
def artifacts_dir(tmp_path: Path) -> Path:
    path = tmp_path / "artifacts"
    path.mkdir()
    return path
