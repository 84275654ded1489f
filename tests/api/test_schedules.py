"""/v1/schedules: create, list, get, change, fire now, delete, runs; validation; isolation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from services.api.settings import ApiSettings, TeamLimits
from services.store import Database
from services.store import schedules as repo
from services.store.domain import RunOutcome
from services.store.schedules import RunRecord
from tests.fixtures.api import SPEC

BODY = {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "spec": SPEC}


def create(client: TestClient, headers: dict[str, str], **fields: object) -> dict:
    response = client.post("/v1/schedules", json={**BODY, **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_create_returns_the_schedule_with_its_next_fire_time(
    client: TestClient, auth: dict[str, str]
) -> None:
    before = datetime.now(UTC)
    response = client.post("/v1/schedules", json=BODY, headers=auth)
    assert response.status_code == 201, response.text
    schedule = response.json()
    assert response.headers["location"] == f"/v1/schedules/{schedule['id']}"
    assert schedule["id"].startswith("s") and schedule["team"] == "vision"
    assert schedule["name"] == "ppe-detector"  # the spec's name by default
    assert schedule["only_if_dataset_changed"] is True and schedule["paused"] is False
    assert schedule["spec"]["train"]["epochs"] == 3 and schedule["spec"]["retries"] == 2
    next_fire = _time(schedule["next_fire_at"])
    local = next_fire.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.hour, local.minute) == (3, 0)
    assert before < next_fire <= before + timedelta(hours=25)
    assert schedule["last_fire_at"] is None and schedule["dataset_fingerprint"] is None

    detail = client.get(f"/v1/schedules/{schedule['id']}", headers=auth).json()
    assert detail["recent_runs"] == [] and detail["next_fire_at"] == schedule["next_fire_at"]


@pytest.mark.parametrize(("fields", "path", "message"), [
    ({"cron": "0 3 * *"}, "cron", "5 fields"),
    ({"cron": "0 25 * * *"}, "cron", "not a valid cron expression"),
    ({"cron": "* * * * *"}, "cron", "at most once every 5 minutes"),
    ({"timezone": "Europe/Atlantis"}, "timezone", "unknown time zone 'Europe/Atlantis'"),
    ({"spec": {**SPEC, "train": {"lr": 0.1}}}, "spec.train.lr", "unknown key 'lr'"),
    ({"name": "Not A Label"}, "name", "pattern"),
    ({"every": "day"}, "every", "unknown key"),
])
def test_invalid_schedules_are_refused_naming_the_field(
    client: TestClient, auth: dict[str, str], fields: dict, path: str, message: str
) -> None:
    response = client.post("/v1/schedules", json={**BODY, **fields}, headers=auth)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert response.headers["content-type"] == "application/problem+json"
    [error] = [e for e in problem["errors"] if e["path"] == path]
    assert message in error["message"]
    assert client.get("/v1/schedules", headers=auth).json()["items"] == []


def test_a_spec_over_the_team_limits_is_refused_as_a_submission_would_be(
    client: TestClient, auth: dict[str, str], settings: ApiSettings
) -> None:
    settings.team_limits["vision"] = TeamLimits(max_gpus_per_job=1)
    big = {**SPEC, "resources": {"gpus": 2}}
    response = client.post("/v1/schedules", json={**BODY, "spec": big}, headers=auth)
    assert response.status_code == 403 and response.json()["code"] == "limit_exceeded"
    schedule = create(client, auth)
    patched = client.patch(f"/v1/schedules/{schedule['id']}", json={"spec": big}, headers=auth)
    assert patched.status_code == 403 and patched.json()["code"] == "limit_exceeded"


def test_pause_resume_and_changes(client: TestClient, auth: dict[str, str]) -> None:
    schedule = create(client, auth, paused=True)
    url = f"/v1/schedules/{schedule['id']}"
    assert schedule["paused"] is True and schedule["next_fire_at"] is None
    assert client.post(f"{url}/run", headers=auth).status_code == 409  # paused
    resumed = client.patch(url, json={"paused": False}, headers=auth).json()
    assert resumed["paused"] is False and _time(resumed["next_fire_at"]) > datetime.now(UTC)

    changed = client.patch(url, json={"cron": "30 6 * * 1", "timezone": "UTC",
                                      "only_if_dataset_changed": False}, headers=auth)
    assert changed.status_code == 200, changed.text
    body = changed.json()
    next_fire = _time(body["next_fire_at"])
    assert (next_fire.weekday(), next_fire.hour, next_fire.minute) == (0, 6, 30)
    assert body["only_if_dataset_changed"] is False and body["cron"] == "30 6 * * 1"
    refused = client.patch(url, json={"timezone": "Nowhere/Else"}, headers=auth)
    assert refused.status_code == 422 and refused.json()["errors"][0]["path"] == "timezone"
    assert client.get(url, headers=auth).json()["timezone"] == "UTC"

    paused = client.patch(url, json={"paused": True}, headers=auth).json()
    assert paused["paused"] is True and paused["next_fire_at"] is None


def test_run_now_makes_the_schedule_due(client: TestClient, auth: dict[str, str]) -> None:
    schedule = create(client, auth)
    response = client.post(f"/v1/schedules/{schedule['id']}/run", headers=auth)
    assert response.status_code == 202, response.text
    assert _time(response.json()["next_fire_at"]) <= datetime.now(UTC)


def test_delete(client: TestClient, auth: dict[str, str]) -> None:
    schedule = create(client, auth)
    url = f"/v1/schedules/{schedule['id']}"
    response = client.delete(url, headers=auth)
    assert response.status_code == 204 and response.content == b""
    for method in ("GET", "DELETE", "PATCH"):
        gone = client.request(method, url, headers=auth, json={} if method == "PATCH" else None)
        assert gone.status_code == 404 and gone.json()["code"] == "schedule_not_found"


def test_list_pages_newest_first(client: TestClient, auth: dict[str, str]) -> None:
    ids = [create(client, auth, name=f"s-{i}")["id"] for i in range(3)]
    first = client.get("/v1/schedules?limit=2", headers=auth).json()
    assert [s["id"] for s in first["items"]] == ids[:0:-1]
    second = client.get(f"/v1/schedules?limit=2&cursor={first['next_cursor']}",
                        headers=auth).json()
    assert [s["id"] for s in second["items"]] == ids[:1] and second["next_cursor"] is None
    bad = client.get("/v1/schedules?cursor=nope", headers=auth)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_request"


def test_runs_are_listed_newest_first_and_in_the_detail(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    schedule_id = create(client, auth, cron="*/5 * * * *", timezone="UTC")["id"]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i, outcome in enumerate([RunOutcome.FAILED, RunOutcome.SKIPPED, RunOutcome.SKIPPED]):
        with db.transaction() as session:
            seen = repo.get_schedule(session, schedule_id, team=None)
            repo.record_run(session, seen, RunRecord(
                fire_time=start + timedelta(minutes=5 * i), outcome=outcome,
                message=f"run {i}", next_fire_at=start + timedelta(minutes=5 * i + 5)))
    runs = client.get(f"/v1/schedules/{schedule_id}/runs?limit=2", headers=auth).json()
    assert [r["message"] for r in runs["items"]] == ["run 2", "run 1"]
    assert runs["items"][0]["outcome"] == "skipped" and runs["items"][0]["job_id"] is None
    rest = client.get(f"/v1/schedules/{schedule_id}/runs?cursor={runs['next_cursor']}",
                      headers=auth).json()
    assert [r["message"] for r in rest["items"]] == ["run 0"] and rest["next_cursor"] is None
    detail = client.get(f"/v1/schedules/{schedule_id}", headers=auth).json()
    assert [r["message"] for r in detail["recent_runs"]] == ["run 2", "run 1", "run 0"]
    assert detail["last_outcome"] == "skipped"
    assert detail["last_fire_at"] == "2026-01-01T00:10:00Z"


ROUTES = [
    ("GET", "/v1/schedules/{id}", None),
    ("PATCH", "/v1/schedules/{id}", {"paused": True}),
    ("DELETE", "/v1/schedules/{id}", None),
    ("POST", "/v1/schedules/{id}/run", None),
    ("GET", "/v1/schedules/{id}/runs", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_team_b_gets_404_on_every_route_of_team_a_schedule(
    client: TestClient, make_token: Callable[[str], str], method: str, path: str,
    body: dict | None,
) -> None:
    team_a = {"Authorization": f"Bearer {make_token('team-a')}"}
    team_b = {"Authorization": f"Bearer {make_token('team-b')}"}
    schedule = create(client, team_a)
    url = path.format(id=schedule["id"])
    response = client.request(method, url, headers=team_b, json=body)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "schedule_not_found"
    missing = client.request(method, path.format(id="s" + "0" * 26), headers=team_b, json=body)
    assert missing.status_code == 404
    assert response.json()["detail"].replace(schedule["id"], "X") == \
        missing.json()["detail"].replace("s" + "0" * 26, "X")
    # Nothing changed for team A, which still can.
    assert client.get(f"/v1/schedules/{schedule['id']}", headers=team_a).json() == \
        {**schedule, "recent_runs": []}
    assert client.request(method, url, headers=team_a, json=body).status_code in {200, 202, 204}


def test_listings_show_only_the_callers_schedules(
    client: TestClient, make_token: Callable[[str], str]
) -> None:
    team_a = {"Authorization": f"Bearer {make_token('team-a')}"}
    team_b = {"Authorization": f"Bearer {make_token('team-b')}"}
    mine = create(client, team_a)
    create(client, team_b)
    assert [s["id"] for s in client.get("/v1/schedules", headers=team_a).json()["items"]] == \
        [mine["id"]]


def test_schedules_need_a_token(client: TestClient) -> None:
    assert client.get("/v1/schedules").status_code == 401
    assert client.post("/v1/schedules", json=BODY).status_code == 401
