"""Concurrent duplicate submissions: 50 requests with one Idempotency-Key make exactly one job.

Runs against PostgreSQL (the production store, where the race is real: requests run in
parallel transactions) and SQLite.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from services.api import jobs as jobs_service
from services.store import Database
from tests.fixtures.api import SPEC


async def _burst(app: FastAPI, headers: dict[str, str], n: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        requests = [client.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
                    for _ in range(n)]
        return await asyncio.gather(*requests)


def test_50_concurrent_submits_with_one_key_make_one_job(
    app: FastAPI, auth: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight, most = [0], [0]
    lock = threading.Lock()
    original = jobs_service.submit_async  # what the route awaits

    async def spy(*args: object, **kwargs: object) -> object:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            return await original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                in_flight[0] -= 1

    monkeypatch.setattr(jobs_service, "submit_async", spy)
    responses = asyncio.run(_burst(app, {**auth, "Idempotency-Key": "burst-1"}, 50))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 50}, statuses
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    with db.transaction() as session:
        assert session.execute(text("SELECT count(*) FROM jobs")).scalar() == 1
        assert session.execute(text("SELECT count(*) FROM idempotency_keys")).scalar() == 1
    # Exactly one of them created it; the others replayed its response.
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 49
    # The losers' spec files were removed: only the winner's is left.
    store = app.state.trainforge.artifacts
    specs = [i.key for i in store.list(app.state.trainforge.key("jobs/")) if
             i.key.endswith("spec.json")]
    assert len(specs) == 1 and ids.pop() in specs[0]
    # The duplicates really ran at the same time.
    print(f"up to {most[0]} submissions were in flight at once")
    assert most[0] > 1


def test_concurrent_submits_without_a_key_respect_the_active_job_limit(
    app: FastAPI, auth: dict[str, str], db: Database
) -> None:
    from services.api.settings import TeamLimits

    app.state.trainforge.settings.team_limits["vision"] = TeamLimits(max_active_jobs=7)
    responses = asyncio.run(_burst(app, auth, 20))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 7, 429: 13}, statuses


def test_the_limit_is_exact_on_both_the_shared_and_the_exclusive_lock_paths(
    app: FastAPI, auth: dict[str, str], db: Database
) -> None:
    from services.api.settings import TeamLimits
    from services.store import creation
    from services.store import jobs as repo

    with db.transaction() as session:
        bound = creation.concurrent_transactions_bound(session)
    # Far below the limit, submissions take the shared lock; the last ~bound take it exclusive.
    limit = bound + 10
    app.state.trainforge.settings.team_limits["vision"] = TeamLimits(max_active_jobs=limit)
    responses = asyncio.run(_burst(app, auth, limit + 20))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: limit, 429: 20}, statuses
    with db.transaction() as session:
        assert repo.count_unfinished(session, "vision") == limit
