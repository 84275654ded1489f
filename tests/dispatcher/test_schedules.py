"""Firing schedules: one job per fire time, dataset-unchanged skips, failures, missed times.

The dispatchers run on a controllable clock (tests/dispatcher/schedules.py) and launch nothing:
what is checked is what a fire time leaves in the job store (the job, its spec, the run row).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.store import Database
from services.store import jobs as repo
from services.store.domain import RunOutcome
from services.store.settings import TeamLimits
from tests.fixtures.dispatcher import SPEC
from tests.fixtures.schedules import (
    T0,
    Clock,
    add_schedule,
    all_jobs,
    make_dispatcher,
    runs,
    schedule,
)
from trainforge.datasets import fingerprint, synth
from trainforge.preflight import LocalMachine
from trainforge.states import JobState


def _runs_total(outcome: str) -> float:
    return REGISTRY.get_sample_value("trainforge_schedule_runs_total", {"outcome": outcome}) or 0


def test_a_due_schedule_submits_its_template_as_a_job(db: Database, tmp_path: Path) -> None:
    created = add_schedule(db)
    clock = Clock()
    dispatcher = make_dispatcher(db, tmp_path, clock)
    try:
        dispatcher.run_once()
        assert all_jobs(db) == [] and runs(db, created.id) == []  # not due yet
        submitted_before = _runs_total("submitted")
        fire_time = clock.at_fire(1)
        dispatcher.run_once()
        dispatcher.run_once()  # the same fire time again: nothing more
    finally:
        dispatcher.close()

    [job] = all_jobs(db)
    [run] = runs(db, created.id)
    assert (run.fire_time, run.outcome, run.job_id) == (fire_time, RunOutcome.SUBMITTED, job.id)
    assert run.message == f"submitted job {job.id}: on schedule"
    assert _runs_total("submitted") == submitted_before + 1
    assert (job.team, job.name, job.state, job.schedule_id) == \
        ("vision", "ppe-detector", JobState.QUEUED, created.id)
    spec = json.loads(Path(job.spec_uri.removeprefix("file://")).read_text())
    assert spec["train"]["epochs"] == SPEC["train"]["epochs"]
    assert spec["dataset"] == SPEC["dataset"]
    with db.transaction() as session:
        [event] = repo.list_events(session, job.id)
    assert event.reason == f"submitted by schedule {created.id}"
    after = schedule(db, created.id)
    assert after.next_fire_at == fire_time + timedelta(minutes=5)
    assert (after.last_fire_at, after.last_outcome, after.last_job_id) == \
        (fire_time, RunOutcome.SUBMITTED, job.id)


def test_a_run_on_an_unchanged_dataset_is_skipped_with_a_message(
    db: Database, tmp_path: Path
) -> None:
    data = synth(tmp_path / "shapes", train=4, val=2, test=0, imgsz=32)
    created = add_schedule(db, only_if_dataset_changed=True,
                           spec={**SPEC, "dataset": {"uri": str(data)}})
    clock = Clock()
    dispatcher = make_dispatcher(db, tmp_path, clock)
    skipped_before = _runs_total("skipped")
    try:
        first = clock.at_fire(1)
        dispatcher.run_once()
        clock.at_fire(2)
        dispatcher.run_once()  # nothing changed
        label = data / "train" / "labels" / "train_00000.txt"
        label.write_text(label.read_text() + "0 0.5 0.5 0.1 0.1\n")
        clock.at_fire(3)
        dispatcher.run_once()  # a label changed
        clock.at_fire(4)
        dispatcher.run_once()  # unchanged again, since the third run
    finally:
        dispatcher.close()

    found = runs(db, created.id)
    assert [r.outcome for r in found] == [RunOutcome.SUBMITTED, RunOutcome.SKIPPED,
                                          RunOutcome.SUBMITTED, RunOutcome.SKIPPED]
    old, new = found[0].fingerprint, found[2].fingerprint
    assert old is not None and new is not None and old != new
    assert found[1].fingerprint == old and new == fingerprint(data)
    assert found[1].job_id is None
    assert found[1].message == (f"dataset unchanged since the run of {first:%Y-%m-%d %H:%M} UTC "
                                f"(fingerprint {old[:12]}); no job submitted")
    assert found[3].message.startswith(
        f"dataset unchanged since the run of {found[2].fire_time:%Y-%m-%d %H:%M} UTC")
    assert found[2].message == f"submitted job {found[2].job_id}: dataset changed " \
                               f"(fingerprint {new[:12]})"
    assert [j.id for j in all_jobs(db)] == [found[0].job_id, found[2].job_id]
    assert _runs_total("skipped") == skipped_before + 2
    after = schedule(db, created.id)
    assert (after.dataset_fingerprint, after.dataset_fingerprint_at) == (new, found[2].fire_time)
    assert after.last_outcome is RunOutcome.SKIPPED and after.last_job_id == found[2].job_id


def test_an_unreadable_dataset_fails_the_run_and_the_schedule_goes_on(
    db: Database, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dataset"
    created = add_schedule(db, only_if_dataset_changed=True,
                           spec={**SPEC, "dataset": {"uri": str(missing)}})
    clock = Clock()
    dispatcher = make_dispatcher(db, tmp_path, clock)
    try:
        clock.at_fire(1)
        dispatcher.run_once()
        synth(missing, train=2, val=1, test=0, imgsz=32)
        clock.at_fire(2)
        dispatcher.run_once()
    finally:
        dispatcher.close()
    failed, submitted = runs(db, created.id)
    assert failed.outcome is RunOutcome.FAILED and failed.job_id is None
    assert failed.message.startswith(f"could not fingerprint dataset {missing}: ")
    assert "does not exist" in failed.message
    assert submitted.outcome is RunOutcome.SUBMITTED
    assert [j.id for j in all_jobs(db)] == [submitted.job_id]


def test_on_the_embedded_server_a_fire_is_checked_like_a_submission(
    db: Database, tmp_path: Path
) -> None:
    missing = tmp_path / "moved-away"
    created = add_schedule(db, spec={**SPEC, "dataset": {"uri": f"file://{missing}/"},
                                     "model": {"base": "yolov8n.yaml"}})
    _fire_once(db, tmp_path,
               machine=LocalMachine(weights_cache=tmp_path / "weights", offline=True))
    [failed] = runs(db, created.id)
    assert failed.outcome is RunOutcome.FAILED and failed.job_id is None
    assert failed.message == (f"no job submitted: dataset.uri: {missing} does not exist: pass "
                              "the dataset root (the folder with data.yaml)")
    assert all_jobs(db) == []


def test_a_team_at_its_limit_gets_a_failed_run_not_a_job(db: Database, tmp_path: Path) -> None:
    created = add_schedule(db)
    clock = Clock()
    dispatcher = make_dispatcher(db, tmp_path, clock, limits=TeamLimits(max_active_jobs=1))
    try:
        clock.at_fire(1)
        dispatcher.run_once()
        clock.at_fire(2)
        dispatcher.run_once()
    finally:
        dispatcher.close()
    submitted, failed = runs(db, created.id)
    assert submitted.outcome is RunOutcome.SUBMITTED
    assert failed.outcome is RunOutcome.FAILED and failed.job_id is None
    assert failed.message == ("no job submitted: team 'vision' has 1 unfinished jobs, its limit "
                              "is 1; retry when some finish or cancel one")
    assert len(all_jobs(db)) == 1
    # No orphan spec: only the submitted job's spec was kept.
    specs = list((tmp_path / "artifacts").rglob("spec.json"))
    assert [p.parent.name for p in specs] == [submitted.job_id]
    assert schedule(db, created.id).next_fire_at == T0 + timedelta(minutes=15)


def test_a_fire_time_that_cannot_be_written_stays_due_and_other_schedules_go_on(
    db: Database, tmp_path: Path
) -> None:
    blocked = add_schedule(db)
    other = add_schedule(db, only_if_dataset_changed=True,
                         spec={**SPEC, "dataset": {"uri": str(tmp_path / "missing")}})
    (tmp_path / "not-a-dir").write_text("")
    clock = Clock()
    fire_time = clock.at_fire(1)
    broken = make_dispatcher(db, tmp_path, clock, artifacts=tmp_path / "not-a-dir" / "store")
    try:
        broken.run_once()  # the spec cannot be written: no exception escapes the loop
    finally:
        broken.close()
    assert runs(db, blocked.id) == [] and all_jobs(db) == []
    assert schedule(db, blocked.id).next_fire_at == fire_time  # still due
    assert [r.outcome for r in runs(db, other.id)] == [RunOutcome.FAILED]
    working = make_dispatcher(db, tmp_path, clock)
    try:
        working.run_once()
    finally:
        working.close()
    [run] = runs(db, blocked.id)
    assert (run.fire_time, run.outcome) == (fire_time, RunOutcome.SUBMITTED)


def test_after_an_outage_only_the_latest_missed_fire_time_runs(
    db: Database, tmp_path: Path
) -> None:
    created = add_schedule(db)
    clock = Clock(T0 + timedelta(hours=3, minutes=2))  # 36 fire times have passed
    dispatcher = make_dispatcher(db, tmp_path, clock)
    try:
        dispatcher.run_once()
        dispatcher.run_once()
    finally:
        dispatcher.close()
    [run] = runs(db, created.id)
    assert run.fire_time == T0 + timedelta(hours=3)
    assert run.message.endswith(
        "; 35 earlier fire time(s) since 2026-11-27 10:05 UTC were missed (no dispatcher was "
        "leading) and are not run")
    assert len(all_jobs(db)) == 1
    assert schedule(db, created.id).next_fire_at == T0 + timedelta(hours=3, minutes=5)


def test_paused_schedules_do_not_fire_and_resume_at_their_next_time(
    db: Database, tmp_path: Path
) -> None:
    from services.store import schedules as repo_schedules

    created = add_schedule(db, paused=True)
    clock = Clock()
    dispatcher = make_dispatcher(db, tmp_path, clock)
    try:
        clock.at_fire(3)
        dispatcher.run_once()
        assert runs(db, created.id) == []
        with db.transaction() as session:
            resumed = repo_schedules.update_schedule(
                session, created.id, repo_schedules.ScheduleChanges(paused=False),
                team="vision", now=clock.now)
        assert resumed.next_fire_at == T0 + timedelta(minutes=20)  # not the passed ones
        dispatcher.run_once()
        assert runs(db, created.id) == []
        fire_time = clock.at_fire(4)
        dispatcher.run_once()
    finally:
        dispatcher.close()
    assert [r.fire_time for r in runs(db, created.id)] == [fire_time]


def test_a_template_that_no_longer_validates_fails_its_runs(
    db: Database, tmp_path: Path
) -> None:
    created = add_schedule(db, spec={**SPEC, "train": {"epochs": 0}})
    _fire_once(db, tmp_path)
    [run] = runs(db, created.id)
    assert run.outcome is RunOutcome.FAILED
    assert run.message.startswith("the job template no longer validates: train.epochs: ")
    assert all_jobs(db) == []


@pytest.mark.parametrize("outcome", ["submitted", "skipped"])
def test_a_fire_time_has_one_run_even_when_recorded_twice(
    db: Database, outcome: str
) -> None:
    """The store's own guards, without a dispatcher: a stale snapshot, then the constraint."""
    from sqlalchemy.exc import IntegrityError

    from services.store import schedules as repo_schedules
    from services.store.tables import ScheduleRunRow

    created = add_schedule(db)
    record = repo_schedules.RunRecord(
        fire_time=created.next_fire_at, outcome=RunOutcome(outcome), message="first",
        next_fire_at=created.next_fire_at + timedelta(minutes=5))
    with db.transaction() as session:
        repo_schedules.record_run(session, created, record)
    with pytest.raises(repo_schedules.ScheduleMoved), db.transaction() as session:
        repo_schedules.record_run(session, created, record)  # read before the first commit
    with pytest.raises(IntegrityError), db.transaction() as session:
        session.add(ScheduleRunRow(schedule_id=created.id, fire_time=created.next_fire_at,
                                   outcome=outcome, message="again", created_at=T0))
        session.flush()
    assert [r.message for r in runs(db, created.id)] == ["first"]


def _fire_once(db: Database, tmp_path: Path, **dispatcher_args: Any) -> None:
    """One dispatcher pass at the first fire time of the schedules in ``db``."""
    clock = Clock()
    dispatcher = make_dispatcher(db, tmp_path, clock, **dispatcher_args)
    try:
        clock.at_fire(1)
        dispatcher.run_once()
    finally:
        dispatcher.close()
