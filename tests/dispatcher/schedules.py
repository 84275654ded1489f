"""Helpers of the schedule-firing tests: dispatchers on a controllable clock, schedules, runs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.dispatcher import Dispatcher, DispatcherConfig
from services.store import Database, schedules
from services.store import jobs as repo
from services.store.domain import Job, NewSchedule, Schedule, ScheduleRun
from services.store.ids import new_schedule_id
from services.store.settings import TeamLimits
from tests.dispatcher.support import SECRET, SPEC
from tests.jobstore import open_access
from trainforge.preflight import LocalMachine

#: When the test schedules are created: fire times are T0 + 5 min, T0 + 10 min, …
T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class Clock:
    """The time the dispatchers see; tests move it, nothing sleeps."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at_fire(self, n: int, *, every: timedelta = timedelta(minutes=5)) -> datetime:
        """Just after the ``n``-th fire time of an every-5-minutes schedule created at T0."""
        self.now = T0 + n * every + timedelta(seconds=7)
        return T0 + n * every


def make_dispatcher(
    database: Database, tmp_path: Path, clock: Clock, *,
    limits: TeamLimits | None = None, artifacts: Path | None = None,
    machine: LocalMachine | None = None, **kwargs: Any,
) -> Dispatcher:
    """A dispatcher that fires schedules but launches nothing (max_active=0: jobs stay QUEUED).

    Job specs go to ``artifacts`` (default ``tmp_path/artifacts``); ``machine``: the embedded
    server's view of its jobs' machine (default None, as in production).
    """
    config = DispatcherConfig(
        api_url="http://127.0.0.1:9",
        secret_key=SECRET.encode(),
        artifacts_uri=f"file://{artifacts or tmp_path / 'artifacts'}",
        models_uri=f"file://{tmp_path / 'models'}",
        max_active=0,
        limits_for=lambda _team: limits or TeamLimits(),
        access_for=open_access,
        machine=machine,
    )
    return Dispatcher(database, LocalBackend(tmp_path / "state"), config, clock=clock, **kwargs)


@contextmanager
def dispatchers(database_url: str, tmp_path: Path, clock: Clock, count: int,
                **kwargs: Any) -> Iterator[list[Dispatcher]]:
    """``count`` dispatchers, each with a Database (engine, pool) of its own: like replicas."""
    made: list[tuple[Database, Dispatcher]] = []
    try:
        for _ in range(count):
            database = Database(database_url, pool_size=3)
            made.append((database, make_dispatcher(database, tmp_path, clock, **kwargs)))
        yield [d for _, d in made]
    finally:
        for database, dispatcher in made:
            dispatcher.close()
            database.dispose()


def add_schedule(database: Database, *, cron: str = "*/5 * * * *", team: str = "vision",
                 only_if_dataset_changed: bool = False, spec: dict[str, Any] | None = None,
                 now: datetime = T0, paused: bool = False) -> Schedule:
    with database.transaction() as session:
        return schedules.insert_schedule(session, NewSchedule(
            id=new_schedule_id(), team=team, name="nightly", cron=cron, timezone="UTC",
            spec=spec or SPEC, only_if_dataset_changed=only_if_dataset_changed, paused=paused,
        ), now=now)


def runs(database: Database, schedule_id: str) -> list[ScheduleRun]:
    """A schedule's runs, oldest first."""
    with database.transaction() as session:
        found, _ = schedules.list_runs(session, schedule_id, limit=1000)
    return list(reversed(found))


def schedule(database: Database, schedule_id: str) -> Schedule:
    with database.transaction() as session:
        return schedules.get_schedule(session, schedule_id, team=None)


def all_jobs(database: Database, team: str = "vision") -> list[Job]:
    """A team's jobs, oldest first."""
    with database.transaction() as session:
        found, _ = repo.list_jobs(session, team, limit=1000)
    return list(reversed(found))


def fired_once_each(database: Database, schedule_ids: list[str],
                    fire_times: list[datetime]) -> Callable[[], None]:
    """An assertion: every schedule has exactly one submitted run and job per fire time."""

    def check() -> None:
        jobs = all_jobs(database)
        for schedule_id in schedule_ids:
            found = runs(database, schedule_id)
            assert [r.fire_time for r in found] == fire_times, schedule_id
            assert {r.outcome.value for r in found} == {"submitted"}, schedule_id
            mine = [j for j in jobs if j.schedule_id == schedule_id]
            assert sorted(j.id for j in mine) == sorted(r.job_id or "" for r in found)
        assert len(jobs) == len(schedule_ids) * len(fire_times)

    return check
