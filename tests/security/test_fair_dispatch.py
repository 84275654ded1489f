"""Fair claiming: the team with the fewest launched jobs goes first, teams interleave within a
batch, and a team at ``max_running_jobs`` waits, on SQLite and PostgreSQL, whether one
dispatcher claims or several at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from services.cli.serve import embedded_limits
from services.dispatcher.backends.base import BackendState, BackendStatus, LaunchRequest
from services.dispatcher.dispatcher import Dispatcher, DispatcherConfig
from services.store import Database, creation, dispatch
from services.store import jobs as repo
from services.store.dispatch import Assignment
from services.store.domain import Job, NewJob
from services.store.ids import new_job_id
from services.store.settings import StoreSettings, TeamLimits
from trainforge.spec import JobKind
from trainforge.states import JobState


def _token_sha(job_id: str, attempt: int) -> str:
    return f"{job_id}/{attempt}".ljust(64, "0")[:64]


def _queue(db: Database, artifacts: Path, team: str, n: int = 1) -> list[str]:
    """``n`` QUEUED jobs of ``team`` with real spec files (submitted in this order)."""
    ids = []
    for _ in range(n):
        job_id = new_job_id()
        body = json.dumps({"name": "fair", "dataset": {"uri": "s3://d/p/"}}).encode()
        spec = artifacts / "jobs" / job_id / "spec.json"
        spec.parent.mkdir(parents=True)
        spec.write_bytes(body)
        with db.transaction() as session:
            creation.insert_job(session, NewJob(
                id=job_id, team=team, kind=JobKind.TRAIN, name="fair",
                spec_uri=f"file://{spec}", spec_sha256=hashlib.sha256(body).hexdigest(),
                gpus=1, max_attempts=2))
        ids.append(job_id)
    return ids


def _claim(db: Database, limit: int = 8, **kwargs: object) -> list[Assignment]:
    with db.transaction() as session:
        return dispatch.claim(session, owner="test", backend="test", limit=limit,
                              token_sha256=_token_sha, **kwargs)  # type: ignore[arg-type]


def _run(db: Database, job_id: str) -> None:
    """Claim ``job_id`` alone (nothing else is queued yet) and make it RUNNING."""
    claimed = _claim(db)
    assert [a.job.id for a in claimed] == [job_id]
    with db.transaction() as session:
        dispatch.record_launch(session, job_id, 1, f"run-{job_id}")
        dispatch.mark_running(session, job_id, 1)


def _jobs(db: Database, ids: list[str]) -> list[Job]:
    with db.transaction() as session:
        return [repo.get_job(session, i, team=None) for i in ids]


def _limits(**by_team: int | None) -> Callable[[str], int | None]:
    return lambda team: by_team.get(team)


def test_a_later_team_goes_before_a_busy_teams_backlog(
    db: Database, artifacts_dir: Path
) -> None:
    [long_job] = _queue(db, artifacts_dir, "alpha")
    _run(db, long_job)
    backlog = _queue(db, artifacts_dir, "alpha", 5)
    [bravo] = _queue(db, artifacts_dir, "bravo")
    # Oldest-first would take alpha's backlog; alpha already runs a job and bravo runs none.
    assert [a.job.id for a in _claim(db, limit=1)] == [bravo]
    states = [j.state for j in _jobs(db, backlog)]
    assert states == [JobState.QUEUED] * 5


def test_a_batch_interleaves_teams_fewest_launched_first_ties_to_the_oldest(
    db: Database, artifacts_dir: Path
) -> None:
    [long_job] = _queue(db, artifacts_dir, "alpha")
    _run(db, long_job)
    a2, a3, a4 = _queue(db, artifacts_dir, "alpha", 3)
    [b1] = _queue(db, artifacts_dir, "bravo")
    c1, c2 = _queue(db, artifacts_dir, "charlie", 2)
    order = [a.job.id for a in _claim(db, limit=8)]
    # bravo and charlie run nothing (bravo's job is older); then alpha, bravo and charlie have
    # one each and alpha's next job is the oldest; then charlie (1) before alpha (2).
    assert order == [b1, c1, a2, c2, a3, a4]
    assert _claim(db) == []


def test_max_running_jobs_keeps_a_teams_jobs_queued_until_one_of_its_runs_ends(
    db: Database, artifacts_dir: Path
) -> None:
    limits = _limits(alpha=1, bravo=2)
    [long_job] = _queue(db, artifacts_dir, "alpha")
    _run(db, long_job)
    backlog = _queue(db, artifacts_dir, "alpha", 3)
    bravo = _queue(db, artifacts_dir, "bravo", 3)
    claimed = [a.job.id for a in _claim(db, max_running=limits)]
    assert claimed == bravo[:2]
    assert [j.state for j in _jobs(db, [*backlog, bravo[2]])] == [JobState.QUEUED] * 4
    assert _claim(db, max_running=limits) == []  # nothing changed: nothing more to claim
    with db.transaction() as session:
        dispatch.settle(session, long_job, 1, succeeded=True, message="exited 0",
                        retry_delay=timedelta(0))
    assert [a.job.id for a in _claim(db, max_running=limits)] == backlog[:1]


def test_a_retrying_job_waits_for_its_teams_limit_too(
    db: Database, artifacts_dir: Path
) -> None:
    limits = _limits(alpha=1)
    flaky, other = _queue(db, artifacts_dir, "alpha", 2)
    assert [a.job.id for a in _claim(db, max_running=limits)] == [flaky]
    with db.transaction() as session:
        dispatch.record_launch(session, flaky, 1, "run")
        assert dispatch.settle(session, flaky, 1, succeeded=False, message="exit 1",
                               retry_delay=timedelta(0)) is JobState.RETRYING
    # The retry is the older job: it goes first, and then the limit holds the other back.
    assert [(a.job.id, a.attempt.number) for a in _claim(db, max_running=limits)] == [
        (flaky, 2)]
    assert _jobs(db, [other])[0].state is JobState.QUEUED


def test_max_active_still_bounds_every_team_together(
    db: Database, artifacts_dir: Path
) -> None:
    [long_job] = _queue(db, artifacts_dir, "alpha")
    _run(db, long_job)
    _queue(db, artifacts_dir, "alpha", 2)
    bravo = _queue(db, artifacts_dir, "bravo", 2)
    assert [a.job.id for a in _claim(db, max_active=2)] == bravo[:1]
    assert _claim(db, max_active=2) == []
    assert len(_claim(db, max_active=4)) == 2


def test_claims_at_the_same_moment_never_overshoot_a_limit(
    db: Database, artifacts_dir: Path
) -> None:
    """Dispatcher 1 claims and has not committed yet; dispatcher 2 claims meanwhile. Counting
    alpha's launched jobs before 1 commits, 2 would see room for another alpha job and (SKIP
    LOCKED) take the next one: the claim lock (PostgreSQL) or the write lock (SQLite) makes 2
    see 1's claims or claim nothing."""
    limits = _limits(alpha=1)
    alpha = _queue(db, artifacts_dir, "alpha", 3)
    bravo = _queue(db, artifacts_dir, "bravo", 2)
    first_claimed, second_done = threading.Event(), threading.Event()
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with db.transaction() as session:
                claimed = dispatch.claim(session, owner="one", backend="test", limit=1,
                                         token_sha256=_token_sha, max_running=limits)
                results["one"] = [a.job.id for a in claimed]
                first_claimed.set()
                # Hold the transaction open while the other claims. PostgreSQL: it does not
                # wait for us, so wait for it; SQLite: it waits for our commit, so give it
                # time to start waiting.
                second_done.wait(10 if db.is_postgres else 0.5)
        except BaseException as exc:
            errors.append(exc)
            first_claimed.set()

    def second() -> None:
        try:
            first_claimed.wait(10)
            with db.transaction() as session:
                claimed = dispatch.claim(session, owner="two", backend="test", limit=8,
                                         token_sha256=_token_sha, max_running=limits)
                results["two"] = [a.job.id for a in claimed]
        except BaseException as exc:
            errors.append(exc)
        finally:
            second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert results["one"] == alpha[:1]
    assert not set(results["one"]) & set(results["two"])
    if db.is_postgres:
        assert results["two"] == []  # the other dispatcher was claiming: try next loop
    else:
        assert results["two"] == bravo  # waited for the write lock, then saw alpha's claim
    rest = [a.job.id for a in _claim(db, max_running=limits)]
    assert sorted(results["two"] + rest) == sorted(bravo)
    launched = Counter(j.team for j in _jobs(db, alpha + bravo)
                       if j.state is JobState.STARTING)
    assert launched == {"alpha": 1, "bravo": 2}


def test_many_dispatchers_claiming_together_claim_each_job_once_within_limits(
    db: Database, artifacts_dir: Path
) -> None:
    limits = _limits(alpha=2, bravo=3)
    ids = (_queue(db, artifacts_dir, "alpha", 6) + _queue(db, artifacts_dir, "bravo", 6)
           + _queue(db, artifacts_dir, "charlie", 6))
    claimed: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def dispatcher() -> None:
        try:
            start.wait(10)
            for _ in range(20):
                got = _claim(db, limit=3, max_running=limits, max_active=12)
                with lock:
                    claimed.extend(a.job.id for a in got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=dispatcher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert len(claimed) == len(set(claimed))  # nobody claimed a job twice
    by_team = Counter(j.team for j in _jobs(db, ids) if j.state is JobState.STARTING)
    assert by_team == {"alpha": 2, "bravo": 3, "charlie": 6}  # 11 <= max_active
    assert Counter(j.team for j in _jobs(db, claimed)) == by_team


class _Runs:
    """A backend whose runs never end (for what the dispatcher claims, not what runs)."""

    name = "stub"
    private_env = True  # the job token may travel in LaunchRequest.env

    def __init__(self) -> None:
        self.launched: list[str] = []

    def launch(self, request: LaunchRequest) -> str:
        if request.job_id not in self.launched:
            self.launched.append(request.job_id)
        return request.job_id

    def poll(self, handle: str) -> BackendStatus:
        return BackendStatus(BackendState.RUNNING)

    def cancel(self, handle: str) -> None:
        pass

    def logs(self, handle: str) -> str:
        return ""


def test_the_dispatcher_applies_each_teams_max_running_jobs_from_its_settings(
    db: Database, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINFORGE_DEFAULT_LIMITS", '{"max_running_jobs": 1}')
    monkeypatch.setenv("TRAINFORGE_TEAM_LIMITS", '{"bravo": {"max_running_jobs": 2}}')
    settings = StoreSettings(embedded=True)
    assert settings.limits_for("alpha") == TeamLimits(max_running_jobs=1)
    backend = _Runs()
    dispatcher = Dispatcher(db, backend, DispatcherConfig(  # type: ignore[arg-type]
        api_url="http://127.0.0.1:9", secret_key=b"fair-test",
        artifacts_uri=f"file://{artifacts_dir}",
        models_uri=f"file://{artifacts_dir.parent / 'models'}",
        max_active=3, limits_for=settings.limits_for))
    try:
        [long_job] = _queue(db, artifacts_dir, "alpha")
        dispatcher.run_once()
        backlog = _queue(db, artifacts_dir, "alpha", 5)
        bravo = _queue(db, artifacts_dir, "bravo", 3)
        dispatcher.run_once()
        dispatcher.run_once()
    finally:
        dispatcher.close()
    assert backend.launched == [long_job, *bravo[:2]]  # max_active 3 = alpha 1 + bravo 2
    assert [j.state for j in _jobs(db, [long_job, *bravo[:2]])] == [JobState.RUNNING] * 3
    assert [j.state for j in _jobs(db, [*backlog, bravo[2]])] == [JobState.QUEUED] * 6


def test_max_running_jobs_is_unset_by_default_and_never_zero() -> None:
    assert TeamLimits().max_running_jobs is None
    assert TeamLimits.model_validate({"max_running_jobs": None}).max_running_jobs is None
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TeamLimits(max_running_jobs=0)


def test_serve_gives_one_running_job_per_team_unless_the_limits_say_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRAINFORGE_DEFAULT_LIMITS", '{"max_active_jobs": 5}')
    monkeypatch.setenv("TRAINFORGE_TEAM_LIMITS", '{"unlimited": {"max_running_jobs": null}, '
                       '"three": {"max_running_jobs": 3}, "plain": {"max_gpus_per_job": 2}}')
    settings = embedded_limits(StoreSettings(embedded=True))
    assert settings.limits_for("anyone") == TeamLimits(max_active_jobs=5, max_running_jobs=1)
    assert settings.limits_for("unlimited").max_running_jobs is None
    assert settings.limits_for("three").max_running_jobs == 3
    assert settings.limits_for("plain") == TeamLimits(max_gpus_per_job=2, max_running_jobs=1)
