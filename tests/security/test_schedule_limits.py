"""A team cannot pile up schedules, and a schedule's fires do not re-read an unchanged tree.

The attack: 150 schedules created in 12 s, each firing every 5 minutes on a local dataset
whose every file the dispatcher hashed at every fire. Now ``max_schedules`` (team limits,
default 20) refuses the 21st with a 403 that says what to do, exactly also under concurrent
creations, and the scheduler hashes a local tree again only when a file of it changed (a
stat signature decides, trainforge/datasets/fingerprint.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from services.api import create_app
from services.api.settings import ApiSettings
from services.store import Database
from services.store.domain import RunOutcome
from services.store.settings import TeamLimits
from tests.fixtures.api import SPEC
from tests.fixtures.network import serve_app
from tests.fixtures.schedules import Clock, add_schedule, make_dispatcher, runs
from trainforge.datasets import synth


def _create(client: TestClient | httpx.Client, headers: dict[str, str]) -> httpx.Response:
    return client.post("/v1/schedules", json={"spec": SPEC, "cron": "0 3 * * *"},
                       headers=headers)


def test_the_schedule_limit_is_refused_clearly_and_per_team(
    client: TestClient, auth: dict[str, str], make_token: Callable[[str], str],
) -> None:
    assert TeamLimits().max_schedules == 20  # the default every team gets
    made = [_create(client, auth) for _ in range(20)]
    assert [r.status_code for r in made] == [201] * 20, made[-1].text
    refused = _create(client, auth)
    assert refused.status_code == 403, refused.text
    body = refused.json()
    assert body["code"] == "limit_exceeded"
    assert body["detail"] == (
        "team 'vision' has 20 schedules, the most it may have (max_schedules: 20); delete one "
        "it no longer needs (trainforge schedules delete ID) or ask an operator to raise the "
        "team's limit")
    other = {"Authorization": f"Bearer {make_token('retail')}"}
    assert _create(client, other).status_code == 201  # another team's count is its own
    deleted = client.delete(f"/v1/schedules/{made[0].json()['id']}", headers=auth)
    assert deleted.status_code == 204
    assert _create(client, auth).status_code == 201


def test_concurrent_creations_never_pass_the_limit(
    settings: ApiSettings, db: Database, make_token: Callable[[str], str],
) -> None:
    settings.default_limits = TeamLimits(max_schedules=3)
    headers = {"Authorization": f"Bearer {make_token('vision')}"}
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as api:
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: _create(api, headers).status_code, range(8)))
        listed = api.get("/v1/schedules", headers=headers).json()["items"]
    assert sorted(answers) == [201] * 3 + [403] * 5, answers
    assert len(listed) == 3


def test_fires_hash_an_unchanged_local_tree_once(db: Database, tmp_path: Path) -> None:
    data = synth(tmp_path / "shapes", train=4, val=2, test=0, imgsz=32)
    spec = {**SPEC, "dataset": {"uri": str(data)}}
    created = [add_schedule(db, only_if_dataset_changed=True, spec=spec) for _ in range(3)]
    clock = Clock()
    dispatcher = make_dispatcher(db, tmp_path, clock)
    try:
        for n in range(1, 5):
            clock.at_fire(n)
            dispatcher.run_once()
        # Three schedules, four fires each, one tree: hashed once.
        assert dispatcher.scheduler.fingerprints.hashed == 1
        # Same size, and the old mtime set back: the ctime (which nobody can set) tells.
        label = data / "train" / "labels" / "train_00000.txt"
        before = label.stat()
        text = label.read_text()
        label.write_text(text.replace("0", "1", 1) if "0" in text else "1" + text[1:])
        os.utime(label, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert (label.stat().st_size, label.stat().st_mtime_ns) == \
            (before.st_size, before.st_mtime_ns)
        clock.at_fire(5)
        dispatcher.run_once()
        assert dispatcher.scheduler.fingerprints.hashed == 2
    finally:
        dispatcher.close()
    for schedule in created:
        outcomes = [r.outcome for r in runs(db, schedule.id)]
        assert outcomes == [RunOutcome.SUBMITTED, *[RunOutcome.SKIPPED] * 3,
                            RunOutcome.SUBMITTED], outcomes
