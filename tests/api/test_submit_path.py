"""The submission hot path (services/store/submission.py create_job_async): one statement on an
async connection on PostgreSQL, the simple path on SQLite, and every guarantee of the slower
path it replaced: a job never without its spec, retries replayed, the limit exact in both lock
modes, rules built once per team, no thread hop, stale pooled connections replaced.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from anyio import to_thread
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from services.api import create_app
from services.api.schemas import JobSubmission
from services.api.settings import ApiSettings, TeamLimits
from services.store import Database, creation, submission
from services.store import jobs as repo
from tests.fixtures.api import SPEC, submit
from trainforge.errors import QuotaExceeded


def _job_count(db: Database) -> int:
    with db.transaction() as session:
        return int(session.execute(text("SELECT count(*) FROM jobs")).scalar_one())


def _specs(artifacts_dir: Path) -> list[Path]:
    return list((artifacts_dir / "jobs").glob("*/spec.json"))


def _needs_postgres(db: Database) -> None:
    if not db.is_postgres:
        pytest.skip("the async single-statement path runs on PostgreSQL only")


@pytest.fixture()
def refusing_events(db: Database) -> Iterator[None]:
    """The database itself refuses every new job's first event (after the job row was
    inserted in the same transaction), until the test ends."""
    if db.is_postgres:
        create = ("ALTER TABLE job_events ADD CONSTRAINT tf_test_refuse "
                  "CHECK (reason <> 'submitted') NOT VALID")
        drop = "ALTER TABLE job_events DROP CONSTRAINT tf_test_refuse"
    else:
        create = ("CREATE TRIGGER tf_test_refuse BEFORE INSERT ON job_events "
                  "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        drop = "DROP TRIGGER tf_test_refuse"
    with db.transaction() as session:
        session.execute(text(create))
    try:
        yield
    finally:
        with db.transaction() as session:
            session.execute(text(drop))


def test_a_database_refusal_after_the_spec_was_written_leaves_no_job_and_no_spec(
    app: FastAPI, auth: dict[str, str], db: Database, artifacts_dir: Path,
    refusing_events: None,
) -> None:
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/jobs", json={"spec": SPEC},
                               headers={**auth, "Idempotency-Key": "refused"})
    assert response.status_code == 500, response.text
    assert _job_count(db) == 0
    assert _specs(artifacts_dir) == []
    with db.transaction() as session:
        assert session.execute(text("SELECT count(*) FROM idempotency_keys")).scalar() == 0


def test_a_retry_at_the_active_job_limit_is_replayed_not_refused(
    client: TestClient, auth: dict[str, str], settings: ApiSettings, db: Database,
    artifacts_dir: Path,
) -> None:
    settings.team_limits["vision"] = TeamLimits(max_active_jobs=1)
    first = submit(client, auth, **{"Idempotency-Key": "once"})
    retry = client.post("/v1/jobs", json={"spec": SPEC},
                        headers={**auth, "Idempotency-Key": "once"})
    assert retry.status_code == 201, retry.text
    assert retry.json() == first and retry.headers["Idempotent-Replayed"] == "true"
    another = client.post("/v1/jobs", json={"spec": SPEC},
                          headers={**auth, "Idempotency-Key": "twice"})
    assert another.status_code == 429 and another.json()["code"] == "quota_exceeded"
    assert "has 1 unfinished jobs, its limit is 1" in another.json()["detail"]
    assert _job_count(db) == 1
    assert [p.parent.name for p in _specs(artifacts_dir)] == [first["id"]]


def test_each_key_is_replayed_with_its_first_answer(app: FastAPI, db: Database) -> None:
    from services.api import jobs as service

    state = app.state.trainforge
    body = JobSubmission.model_validate({"spec": SPEC})
    made = asyncio.run(service.submit_async(state, "vision", body, "k1"))
    replayed = asyncio.run(service.submit_async(state, "vision", body, "k1"))
    assert made.status_code == replayed.status_code == 201
    assert replayed.replayed and not made.replayed and replayed.body == made.body
    made_async = asyncio.run(service.submit_async(state, "vision", body, "k2"))
    replayed_sync = asyncio.run(service.submit_async(state, "vision", body, "k2"))
    assert replayed_sync.replayed and replayed_sync.body == made_async.body
    assert made_async.body["id"] != made.body["id"] and _job_count(db) == 2


def test_access_rules_are_built_once_per_team(
    client: TestClient, auth: dict[str, str], make_token: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: Counter[str] = Counter()
    original = ApiSettings.access_for

    def counting(self: ApiSettings, team: str) -> Any:
        built[team] += 1
        return original(self, team)

    monkeypatch.setattr(ApiSettings, "access_for", counting)
    other = {"Authorization": f"Bearer {make_token('audio')}"}
    for _ in range(3):
        submit(client, auth)
        submit(client, other)
    assert built == {"vision": 1, "audio": 1}
    # The cached rules still refuse what the policy refuses.
    refused = client.post("/v1/jobs", json={"spec": {**SPEC, "dataset": {"uri": "s3://x/y/"}}},
                          headers=auth)
    assert refused.status_code == 403 and refused.json()["code"] == "access_denied"


def test_postgres_submissions_hop_to_no_thread(
    db: Database, settings: ApiSettings, make_token: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs_postgres(db)
    settings.token_cache_s = 60  # as served: verified tokens are cached
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {make_token('vision')}",
               "Idempotency-Key": "first"}
    hops: list[str] = []
    original = to_thread.run_sync

    async def counting(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(getattr(func, "__name__", repr(func)))
        return await original(func, *args, **kwargs)

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            first = await client.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
            assert hops == ["_authenticate"], hops  # the token, once; then cached
            hops.clear()
            more = [await client.post("/v1/jobs", json={"spec": SPEC},
                                      headers={**headers, "Idempotency-Key": f"k{i}"})
                    for i in range(5)]
            return [first, *more]

    monkeypatch.setattr(to_thread, "run_sync", counting)
    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [201] * 6
    assert hops == []
    assert _job_count(db) == 6


def test_both_lock_modes_keep_the_limit_exact(
    app: FastAPI, auth: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs_postgres(db)
    with db.transaction() as session:
        bound = creation.concurrent_transactions_bound(session)
    limit = bound + 4  # the first few can commit under the shared lock, the rest cannot
    app.state.trainforge.settings.team_limits["vision"] = TeamLimits(max_active_jobs=limit)
    modes: Counter[tuple[bool, str]] = Counter()
    original = creation.insert_job_within_limit_async

    async def recording(*args: Any, exclusive: bool, **kwargs: Any) -> Any:
        try:
            job = await original(*args, exclusive=exclusive, **kwargs)
        except BaseException as exc:
            modes[(exclusive, type(exc).__name__)] += 1
            raise
        modes[(exclusive, "created")] += 1
        return job

    monkeypatch.setattr(creation, "insert_job_within_limit_async", recording)

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await asyncio.gather(*(client.post("/v1/jobs", json={"spec": SPEC},
                                                      headers=auth)
                                          for _ in range(limit + 6)))

    statuses = Counter(r.status_code for r in asyncio.run(burst()))
    assert statuses == {201: limit, 429: 6}, statuses
    assert modes[(False, "created")] >= 1, modes  # the shared lock proved the limit
    assert modes[(False, "NearLimit")] >= 1 and modes[(True, "created")] >= 1, modes
    assert modes[(True, "QuotaExceeded")] == 6, modes
    with db.transaction() as session:
        assert repo.count_unfinished(session, "vision") == limit


def test_a_creation_cancelled_after_its_commit_keeps_the_spec(
    app: FastAPI, db: Database, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _needs_postgres(db)
    state = app.state.trainforge
    original = creation.insert_job_within_limit_async
    committed = asyncio.Event()

    async def committed_then_silent(*args: Any, **kwargs: Any) -> Any:
        await original(*args, **kwargs)  # autocommit: the job exists now
        committed.set()
        await asyncio.sleep(3600)  # ... and the answer never comes back

    monkeypatch.setattr(creation, "insert_job_within_limit_async", committed_then_silent)
    body = JobSubmission.model_validate({"spec": SPEC})

    async def run() -> None:
        task = asyncio.create_task(submission.create_job_async(
            state.db, state.artifacts, state.artifacts_prefix,
            submission.JobRequest("vision", body.spec, TeamLimits(),
                                  access=state.access_for("vision")),
        ))
        await asyncio.wait_for(committed.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    with db.transaction() as session:
        jobs, _ = repo.list_jobs(session, "vision")
    assert len(jobs) == 1
    assert [p.parent.name for p in _specs(artifacts_dir)] == [jobs[0].id]


def test_a_refused_creation_discards_the_spec_and_an_unanswered_one_keeps_it() -> None:
    unknown = submission._outcome_unknown
    assert unknown(asyncio.CancelledError())
    assert unknown(psycopg.OperationalError("server closed the connection unexpectedly"))
    assert unknown(psycopg.errors.ConnectionFailure("connection failure"))  # class 08
    # The server ended the session instead of running the statement: nothing committed.
    assert not unknown(psycopg.errors.AdminShutdown("terminating connection"))
    assert not unknown(psycopg.errors.CheckViolation("refused"))
    assert not unknown(QuotaExceeded("at the limit"))
    assert not unknown(submission.IdempotencyKeyTaken())
    assert not unknown(RuntimeError("before anything was sent"))


def test_a_pooled_connection_the_server_closed_is_replaced_after_idling(
    db: Database, database_url: str,
) -> None:
    _needs_postgres(db)
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")

    def terminate(pid: int) -> None:
        with admin.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                                {"pid": pid}).scalar()

    async def backend_pid() -> int:
        async with db.async_pool().connection() as conn:
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
            assert row is not None
            return int(row[0])

    async def run() -> None:
        pool = db.async_pool()
        pool.check_idle_s = 3600  # the hot path: a recently used connection is not pinged
        first = await backend_pid()
        assert await backend_pid() == first  # reused
        terminate(first)
        await asyncio.sleep(0.2)
        with pytest.raises(psycopg.OperationalError):
            await backend_pid()  # used as is: the server had closed it
        second = await backend_pid()  # the broken one was dropped, a new one opened
        assert second != first
        pool.check_idle_s = 0  # idle longer than the threshold: checked before use
        terminate(second)
        await asyncio.sleep(0.2)
        third = await backend_pid()
        assert third not in (first, second)
        await db.aclose()

    try:
        asyncio.run(run())
    finally:
        admin.dispose()
