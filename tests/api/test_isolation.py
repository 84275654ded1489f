"""A team never sees another team's jobs: every job route answers 404 (never 403)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from services.api.settings import ApiSettings
from services.store import Database
from tests.fixtures.api import claim_all, submit

ROUTES = [
    ("GET", "/v1/jobs/{id}", {}),
    ("POST", "/v1/jobs/{id}/cancel", {}),
    ("GET", "/v1/jobs/{id}/events", {}),
    ("GET", "/v1/jobs/{id}/events", {"Accept": "text/event-stream"}),
    ("GET", "/v1/jobs/{id}/logs", {}),
    ("GET", "/v1/jobs/{id}/logs?follow=true", {}),
    ("GET", "/v1/jobs/{id}/logs?attempt=1", {}),
    ("GET", "/v1/jobs/{id}/artifacts", {}),
]


@pytest.mark.parametrize(("method", "path", "headers"), ROUTES,
                         ids=[f"{m} {p} {h.get('Accept', '')}".strip() for m, p, h in ROUTES])
def test_team_b_gets_404_on_every_route_of_team_a_job(
    client: TestClient, db: Database, make_token: Callable[[str], str], settings: ApiSettings,
    method: str, path: str, headers: dict[str, str],
) -> None:
    settings.stream_max_s = 0.2  # team A's own streams below end quickly
    team_a = {"Authorization": f"Bearer {make_token('team-a')}"}
    team_b = {"Authorization": f"Bearer {make_token('team-b')}"}
    job = submit(client, team_a)
    claim_all(db)  # an attempt exists, so ?attempt=1 is valid for team A
    url = path.format(id=job["id"])
    response = client.request(method, url, headers={**team_b, **headers})
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "job_not_found"
    # Identical to a job that does not exist at all: nothing tells B that A's job exists.
    missing = client.request(method, path.format(id="j" + "0" * 26), headers={**team_b, **headers})
    assert missing.status_code == 404
    assert response.json()["detail"].replace(job["id"], "X") == \
        missing.json()["detail"].replace("j" + "0" * 26, "X")
    # And team A still can.
    assert client.request(method, url, headers={**team_a, **headers}).status_code in {200, 202}


def test_listings_show_only_the_callers_jobs(
    client: TestClient, make_token: Callable[[str], str]
) -> None:
    team_a = {"Authorization": f"Bearer {make_token('team-a')}"}
    team_b = {"Authorization": f"Bearer {make_token('team-b')}"}
    mine = submit(client, team_a)
    submit(client, team_b)
    listed = client.get("/v1/jobs", headers=team_a).json()["items"]
    assert [j["id"] for j in listed] == [mine["id"]]


def test_a_cancel_by_another_team_changes_nothing(
    client: TestClient, make_token: Callable[[str], str]
) -> None:
    team_a = {"Authorization": f"Bearer {make_token('team-a')}"}
    team_b = {"Authorization": f"Bearer {make_token('team-b')}"}
    job = submit(client, team_a)
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=team_b).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=team_a).json()["state"] == "QUEUED"
