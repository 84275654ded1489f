"""Firing schedules: one leading dispatcher turns due fire times into jobs.

Leadership (PostgreSQL): the leader holds a session-level advisory lock on a connection of its
own, kept open for the dispatcher's life. Every loop a dispatcher either checks that the
connection is alive (leader) or tries the lock again (follower); a dropped connection ends
the leadership, and the server releases the lock with the session, so a follower takes over
on its next loop. The lock key includes the schema, so that installations sharing a database
do not share a leader. SQLite has no advisory locks: every dispatcher leads, which is right
for the embedded default (one dispatcher, in ``trainforge serve``).

At most one job per (schedule, fire time), whoever leads: the job, the schedule's run row
(UNIQUE (schedule_id, fire_time)) and the schedule's next fire time commit in one transaction,
after re-reading the schedule under a row lock (services/store/schedules.py:record_run). Two
overlapping leaders, a dispatcher restarted mid-fire or a user editing the schedule meanwhile
all end with one run; the loser's transaction rolls back and its spec file is deleted.

Missed fire times: a schedule that was due several times while no dispatcher led (an outage)
runs once, for the latest of them; the message of that run counts the missed ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from services.dispatcher.metrics import SCHEDULE_RUNS, SCHEDULER_LEADER
from services.store import admission, cron, submission
from services.store import schedules as repo
from services.store.clock import utcnow
from services.store.db import Database
from services.store.domain import Job, RunOutcome, Schedule
from services.store.schedules import RunRecord, ScheduleMoved
from services.store.settings import TeamLimits
from trainforge.access import AccessRules, TeamAccess
from trainforge.datasets.fingerprint import FingerprintCache
from trainforge.errors import (
    AccessDenied,
    DatasetError,
    LimitExceeded,
    QuotaExceeded,
    SpecError,
    TrainforgeError,
    WeightsError,
)
from trainforge.preflight import LocalMachine
from trainforge.spec import JobSpec, parse_spec
from trainforge.storage import open_location
from trainforge.text import for_log

log = logging.getLogger(__name__)

#: Session-level lock (two int4 keys): this feature, and the schema the job store lives in.
_TRY_LOCK = text(
    "SELECT pg_try_advisory_lock(hashtext('trainforge.scheduler'), hashtext(current_schema()))"
)
_UNLOCK = text(
    "SELECT pg_advisory_unlock(hashtext('trainforge.scheduler'), hashtext(current_schema()))"
)
#: Due schedules handled per loop (the rest on the next loops, most overdue first).
BATCH = 50


class Leadership:
    """Who fires schedules: the holder of the advisory lock (PostgreSQL), or anyone (SQLite).

    Args:
        db: the job store; on PostgreSQL a connection of its own is opened to its URL.
        owner: this dispatcher's id, for the logs.
    """

    def __init__(self, db: Database, owner: str) -> None:
        self._owner = owner
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._leading = not db.is_postgres
        if db.is_postgres:
            # NullPool: closing the connection really closes the session, and with it the lock.
            self._engine = create_engine(db.url, poolclass=NullPool)
        #: The leader connection's server process (tests end it to simulate a network loss).
        self.backend_pid: int | None = None

    @property
    def leading(self) -> bool:
        return self._leading

    def check(self) -> bool:
        """Keep leadership (its connection still answers) or try to take it. Never raises."""
        if self._engine is None:
            SCHEDULER_LEADER.set(1)
            return True
        try:
            if self._connection is None:
                self._connection = self._engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
                self.backend_pid = int(
                    self._connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
                )
            if self._leading:
                self._connection.execute(text("SELECT 1"))
            elif self._connection.execute(_TRY_LOCK).scalar_one():
                self._leading = True
                log.info("dispatcher %s now leads scheduling", self._owner)
        except DBAPIError as exc:
            if self._leading:
                log.warning("dispatcher %s lost scheduling leadership: %s", self._owner,
                            str(exc).splitlines()[0])
            self._drop()
        SCHEDULER_LEADER.set(1 if self._leading else 0)
        return self._leading

    def _drop(self) -> None:
        self._leading = False
        self.backend_pid = None
        if self._connection is not None:
            try:
                self._connection.invalidate()
                self._connection.close()
            except DBAPIError:
                pass
            self._connection = None

    def close(self) -> None:
        """Give leadership up: a follower can take it on its next loop."""
        if self._engine is None:
            return
        if self._leading and self._connection is not None:
            log.info("dispatcher %s gives up scheduling leadership", self._owner)
            try:
                # At once: the server ends a closed session's locks only when it notices.
                self._connection.execute(_UNLOCK)
            except DBAPIError:
                pass
        self._drop()
        SCHEDULER_LEADER.set(0)
        self._engine.dispose()
        self._engine = None


def default_limits(_team: str) -> TeamLimits:
    """The limits of a team without settings of its own."""
    return TeamLimits()


def no_access(team: str) -> AccessRules:
    """Rules that let a team read nothing (what a dispatcher without a policy applies)."""
    return AccessRules.build(team, TeamAccess(), local_paths=False, reserved={})


class Scheduler:
    """Fires the due schedules when this dispatcher leads (one step of the dispatcher loop).

    Args:
        db: the job store.
        artifacts_uri: where job specs are written (TRAINFORGE_ARTIFACTS_URI).
        owner: this dispatcher's id, for the logs.
        limits_for: team → its limits (TRAINFORGE_DEFAULT_LIMITS / TRAINFORGE_TEAM_LIMITS).
        access_for: team → what it may read (TRAINFORGE_STORAGE_POLICY), checked at every
            fire before the dataset is fingerprinted: the policy may have changed since the
            schedule was created.
        machine: the machine jobs run on when it is this one (embedded mode): each job is
            checked against its files (admission.check_job_inputs).
        clock: the current time (tests pass a controllable one).
        fingerprint: dataset URI → fingerprint; default: a
            :class:`trainforge.datasets.fingerprint.FingerprintCache` of this scheduler (a
            local tree is hashed again only when a file of it changed).
        fault: test hook, called at "schedule_fired" inside a submitted run's transaction.
    """

    def __init__(
        self,
        db: Database,
        *,
        artifacts_uri: str,
        owner: str,
        limits_for: Callable[[str], TeamLimits] = default_limits,
        access_for: Callable[[str], AccessRules] = no_access,
        machine: LocalMachine | None = None,
        clock: Callable[[], datetime] = utcnow,
        fingerprint: Callable[[str], str] | None = None,
        fault: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.leadership = Leadership(db, owner)
        self._limits_for = limits_for
        self._access_for = access_for
        self._machine = machine
        self._clock = clock
        #: Fingerprints of local datasets, kept while their files do not change.
        self.fingerprints = FingerprintCache()
        self._fingerprint = fingerprint or self.fingerprints.fingerprint
        self._fault = fault or (lambda point: None)
        self._artifacts, self._prefix = open_location(artifacts_uri + "/")

    def run_once(self) -> int:
        """Fire what is due, if this dispatcher leads. Returns the runs recorded."""
        if not self.leadership.check():
            return 0
        now = self._clock()
        with self.db.transaction() as session:
            due = repo.due_schedules(session, now, limit=BATCH)
        recorded = 0
        for schedule in due:
            try:
                recorded += self._fire(schedule, now)
            except Exception:
                # E.g. the object store refused the spec: the fire time stays due and is tried
                # again on the next loop; the other schedules go on.
                log.exception("firing schedule %s failed; trying again on the next loop",
                              schedule.id)
        return recorded

    def close(self) -> None:
        self.leadership.close()

    # --- one fire time -----------------------------------------------------------------------

    def _fire(self, schedule: Schedule, now: datetime) -> int:
        fire_time, missed = cron.latest_due(schedule.cron, schedule.timezone,
                                            schedule.next_fire_at, now)
        next_fire_at = cron.next_after(schedule.cron, schedule.timezone, now)
        late = ""
        if missed:
            late = (f"; {'at least ' if missed >= cron.MAX_MISSED_COUNTED else ''}{missed} "
                    f"earlier fire time(s) since {schedule.next_fire_at:%Y-%m-%d %H:%M} UTC "
                    "were missed (no dispatcher was leading) and are not run")

        def record(outcome: RunOutcome, message: str, fingerprint: str | None = None) -> int:
            return self._record(schedule, RunRecord(
                fire_time=fire_time, outcome=outcome, message=message + late,
                next_fire_at=next_fire_at, fingerprint=fingerprint,
            ))

        try:
            spec = parse_spec(schedule.spec)
        except SpecError as exc:
            return record(RunOutcome.FAILED,
                          f"the job template no longer validates: {exc.message}")
        access = self._access_for(schedule.team)
        try:
            admission.check_job_access(spec, access)
        except (AccessDenied, SpecError) as exc:
            return record(RunOutcome.FAILED, f"no job submitted: {exc.message}")
        fingerprint: str | None = None
        if schedule.only_if_dataset_changed:
            try:
                fingerprint = self._fingerprint(spec.dataset.uri)
            except (TrainforgeError, OSError) as exc:
                return record(RunOutcome.FAILED,
                              f"could not fingerprint dataset {spec.dataset.uri}: {exc}")
            if fingerprint == schedule.dataset_fingerprint:
                since = schedule.dataset_fingerprint_at
                when = f" since the run of {since:%Y-%m-%d %H:%M} UTC" if since else ""
                return record(
                    RunOutcome.SKIPPED,
                    f"dataset unchanged{when} (fingerprint {fingerprint[:12]}); "
                    "no job submitted",
                    fingerprint,
                )
        return self._submit(schedule, spec, fire_time, next_fire_at, fingerprint, late)

    def _submit(self, schedule: Schedule, spec: JobSpec, fire_time: datetime,
                next_fire_at: datetime, fingerprint: str | None, late: str) -> int:
        def within(session: Session, job: Job) -> None:
            why = (f"dataset changed (fingerprint {fingerprint[:12]})" if fingerprint
                   else "on schedule")
            repo.record_run(session, schedule, RunRecord(
                fire_time=fire_time, outcome=RunOutcome.SUBMITTED,
                message=f"submitted job {job.id}: {why}{late}", next_fire_at=next_fire_at,
                job_id=job.id, fingerprint=fingerprint,
            ))
            self._fault("schedule_fired")

        try:
            request = submission.JobRequest(
                schedule.team, spec, self._limits_for(schedule.team),
                access=self._access_for(schedule.team), machine=self._machine,
            )
            job = submission.create_job(self.db, self._artifacts, self._prefix, request,
                                        schedule_id=schedule.id, within=within)
        except (AccessDenied, LimitExceeded, QuotaExceeded, SpecError, DatasetError,
                WeightsError) as exc:
            return self._record(schedule, RunRecord(
                fire_time=fire_time, outcome=RunOutcome.FAILED,
                message=f"no job submitted: {exc.message}{late}", next_fire_at=next_fire_at,
                fingerprint=fingerprint,
            ))
        except (ScheduleMoved, IntegrityError):
            self._moved(schedule, fire_time)
            return 0
        SCHEDULE_RUNS.labels(outcome=RunOutcome.SUBMITTED.value).inc()
        log.info("schedule %s fired for %s: submitted job %s%s", schedule.id,
                 fire_time.isoformat(), job.id, late)
        return 1

    def _record(self, schedule: Schedule, run: RunRecord) -> int:
        try:
            with self.db.transaction() as session:
                repo.record_run(session, schedule, run)
        except (ScheduleMoved, IntegrityError):
            self._moved(schedule, run.fire_time)
            return 0
        SCHEDULE_RUNS.labels(outcome=run.outcome.value).inc()
        level = logging.WARNING if run.outcome is RunOutcome.FAILED else logging.INFO
        log.log(level, "schedule %s fired for %s: %s: %s", schedule.id,
                run.fire_time.isoformat(), run.outcome, for_log(run.message))
        return 1

    def _moved(self, schedule: Schedule, fire_time: datetime) -> None:
        log.info("schedule %s: fire time %s already settled or the schedule changed "
                 "meanwhile (another dispatcher, or its owner); nothing done",
                 schedule.id, fire_time.isoformat())
