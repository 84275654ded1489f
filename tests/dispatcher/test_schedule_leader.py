"""Several dispatchers, restarts, crashes: one job per (schedule, fire time), one leader.

Each dispatcher has a Database (engine and pool) of its own on the same job store, as replicas
in separate pods do. On PostgreSQL exactly one of them leads (an advisory lock); on SQLite
every dispatcher leads, and the transaction that records a fire time still admits one run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from services.dispatcher.dispatcher import Dispatcher
from services.store import Database
from tests.fixtures.jobstore import PG_SERVER
from tests.fixtures.schedules import (
    Clock,
    add_schedule,
    all_jobs,
    dispatchers,
    fired_once_each,
    runs,
)


def _concurrently(group: list[Dispatcher], loops: int) -> None:
    """Every dispatcher runs ``loops`` loops in its own thread, started together."""
    start = threading.Barrier(len(group))
    errors: list[BaseException] = []

    def work(dispatcher: Dispatcher) -> None:
        try:
            start.wait()
            for _ in range(loops):
                dispatcher.run_once()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in group]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)


def _leaders(database: Database, group: list[Dispatcher]) -> int:
    leaders = sum(d.is_leader for d in group)
    assert leaders == (1 if database.is_postgres else len(group))
    return leaders


def test_two_dispatchers_make_one_job_per_schedule_and_fire_time(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    schedule_ids = [add_schedule(db).id for _ in range(3)]
    clock = Clock()
    fire_times = []
    with dispatchers(database_url, tmp_path, clock, 2) as group:
        for n in range(1, 5):
            fire_times.append(clock.at_fire(n))
            _concurrently(group, loops=3)
            _leaders(db, group)
    fired_once_each(db, schedule_ids, fire_times)()


def test_overlapping_leaders_still_make_one_job_per_fire_time(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    """The backstop: even two dispatchers that both believe they lead (a leader that lost its
    connection but not yet its loop) cannot fire a fire time twice."""
    schedule_ids = [add_schedule(db).id for _ in range(4)]
    clock = Clock()
    fire_times = []
    with dispatchers(database_url, tmp_path, clock, 3) as group:
        for dispatcher in group:
            dispatcher.scheduler.leadership.check = lambda: True  # type: ignore[method-assign]
        for n in range(1, 4):
            fire_times.append(clock.at_fire(n))
            _concurrently(group, loops=2)
    fired_once_each(db, schedule_ids, fire_times)()


def test_a_restarted_dispatcher_does_not_fire_the_same_time_again(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    created = add_schedule(db)
    clock = Clock()
    fire_time = clock.at_fire(1)
    with dispatchers(database_url, tmp_path, clock, 1) as [first]:
        first.run_once()
    assert len(all_jobs(db)) == 1
    with dispatchers(database_url, tmp_path, clock, 1) as [second]:  # same minute, new process
        second.run_once()
        assert second.is_leader
        next_time = clock.at_fire(2)
        second.run_once()
    fired_once_each(db, [created.id], [fire_time, next_time])()


class Crash(BaseException):
    """Unwinds like a process death: nothing after the crash point runs."""


def test_a_dispatcher_that_dies_before_committing_a_fire_leaves_nothing(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    created = add_schedule(db)
    clock = Clock()
    fire_time = clock.at_fire(1)

    def crash(point: str) -> None:
        if point == "schedule_fired":
            raise Crash(point)

    with dispatchers(database_url, tmp_path, clock, 1, fault=crash) as [dying]:
        with pytest.raises(Crash):
            dying.run_once()
    # The job, its run and the moved fire time were one transaction: none of them happened,
    # and the spec written before it was deleted.
    assert all_jobs(db) == [] and runs(db, created.id) == []
    assert list((tmp_path / "artifacts").rglob("spec.json")) == []
    with dispatchers(database_url, tmp_path, clock, 1) as [successor]:
        successor.run_once()
        successor.run_once()
    fired_once_each(db, [created.id], [fire_time])()


def test_leadership_passes_on_when_the_leaders_connection_drops(
    db: Database, database_url: str, tmp_path: Path
) -> None:
    if not db.is_postgres:
        pytest.skip("SQLite has no advisory locks: every dispatcher leads")
    created = add_schedule(db)
    clock = Clock()
    with dispatchers(database_url, tmp_path, clock, 2) as [leader, follower]:
        leader.run_once()
        follower.run_once()
        assert (leader.is_leader, follower.is_leader) == (True, False)
        pid = leader.scheduler.leadership.backend_pid
        admin = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                # What a network partition or a killed pod does to the leader's session.
                assert conn.execute(text("SELECT pg_terminate_backend(:pid)"),
                                    {"pid": pid}).scalar_one()
                deadline = time.monotonic() + 30
                while conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                   {"pid": pid}).scalar_one():
                    assert time.monotonic() < deadline, "the backend did not exit"
                    time.sleep(0.05)
        finally:
            admin.dispose()
        fire_time = clock.at_fire(1)
        follower.run_once()  # takes over, and fires
        leader.run_once()  # notices the dropped connection: a follower now
        assert (leader.is_leader, follower.is_leader) == (False, True)
        leader.run_once()
        assert not leader.is_leader  # the lock is the follower's: no way back
        follower.close()
        leader.run_once()  # a graceful hand-back is taken at once
        assert leader.is_leader
    fired_once_each(db, [created.id], [fire_time])()
