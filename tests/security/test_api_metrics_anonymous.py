"""The anonymous /metrics endpoint shows no team names (it still counts submissions by kind)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.api import SPEC

TEAMS = ("falcon-secret-proj", "heron-acquisition")


def _submitted_by_kind(text: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "trainforge_jobs_submitted_total"
    }


def test_metrics_name_no_team_after_two_teams_submit(
    live_url: str, make_token: Callable[[str], str],
) -> None:
    with httpx.Client(base_url=live_url, timeout=30) as client:
        before = client.get("/metrics")
        assert before.status_code == 200
        for team in TEAMS:
            headers = {"Authorization": f"Bearer {make_token(team)}"}
            for _ in range(2):
                created = client.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
                assert created.status_code == 201, created.text
        # Requests of each team, including a 404 (the route label is the template).
        client.get("/v1/jobs/j-nope", headers={"Authorization": f"Bearer {make_token(TEAMS[0])}"})
        after = client.get("/metrics")  # no token: anyone who reaches the port
    assert after.status_code == 200
    for team in TEAMS:
        assert team not in after.text
        assert team.split("-")[0] not in after.text
    by_kind_before, by_kind_after = _submitted_by_kind(before.text), _submitted_by_kind(after.text)
    assert set(by_kind_after) == {(("kind", "train"),)} | set(by_kind_before)
    key = (("kind", "train"),)
    assert by_kind_after[key] - by_kind_before.get(key, 0.0) == 4
