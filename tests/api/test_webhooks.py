"""/v1/webhooks: subscriptions per team, the secret shown once and stored sealed, refused
destinations, and the outbox rows the API writes with the changes that cause them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from services.api.settings import ApiSettings
from services.store import Database
from services.store.tables import WebhookEventRow, WebhookRow
from services.webhooks import secrets
from tests.fixtures.api import SPEC
from trainforge import registry
from trainforge.cli import app

SECRET = b"test-secret-key-not-a-placeholder"  # the API's key in tests/api (settings fixture)
HOOK = {"url": "http://127.0.0.1:9/hook", "events": ["job.cancelled", "alias.moved"]}


def _events(db: Database) -> list[WebhookEventRow]:
    with db.transaction() as session:
        return list(session.scalars(select(WebhookEventRow).order_by(WebhookEventRow.seq)))


def test_the_secret_is_shown_once_and_stored_sealed(
        client: TestClient, auth: dict[str, str], db: Database) -> None:
    created = client.post("/v1/webhooks", json={**HOOK, "description": "deployer"},
                          headers=auth)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["enabled"] is True
    assert created.headers["location"] == f"/v1/webhooks/{body['id']}"
    listed = client.get("/v1/webhooks", headers=auth).json()["items"]
    assert [w["id"] for w in listed] == [body["id"]] and "secret" not in listed[0]
    with db.transaction() as session:
        row = session.scalars(select(WebhookRow)).one()
    assert body["secret"] not in row.secret_sealed
    assert secrets.unseal(SECRET, row.id, row.secret_sealed) == body["secret"]


def test_refused_destinations_are_422_with_the_reason(
        client: TestClient, auth: dict[str, str]) -> None:
    for url, why in [("http://169.254.169.254/latest/meta-data/", "https"),
                     ("https://169.254.169.254/latest/meta-data/", "metadata"),
                     ("https://10.0.0.5/hook", "private"),
                     ("https://hooks.example.com:99999/", "not a URL")]:
        response = client.post("/v1/webhooks", json={**HOOK, "url": url}, headers=auth)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["code"] == "webhook_destination_refused"
        assert why in response.json()["detail"], response.json()
    unknown = client.post("/v1/webhooks", json={**HOOK, "events": ["job.started"]},
                          headers=auth)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["path"].startswith("events")


def test_a_team_sees_and_deletes_only_its_own_webhooks(
        client: TestClient, auth: dict[str, str], make_token: Callable[[str], str]) -> None:
    webhook_id = client.post("/v1/webhooks", json=HOOK, headers=auth).json()["id"]
    other = {"Authorization": f"Bearer {make_token('retail')}"}
    assert client.get("/v1/webhooks", headers=other).json()["items"] == []
    assert client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=other).status_code == 404
    assert client.delete(f"/v1/webhooks/{webhook_id}", headers=other).status_code == 404
    assert client.get(f"/v1/webhooks/{webhook_id}/deliveries",
                      headers=auth).json()["items"] == []
    assert client.delete(f"/v1/webhooks/{webhook_id}", headers=auth).status_code == 204
    assert client.delete(f"/v1/webhooks/{webhook_id}", headers=auth).status_code == 404


def test_cancelling_a_job_writes_its_event_in_the_same_transaction(
        client: TestClient, auth: dict[str, str], db: Database) -> None:
    job = client.post("/v1/jobs", json={"spec": {**SPEC, "name": "ppe"}}, headers=auth).json()
    assert _events(db) == []  # nothing for a submission
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200
    [event] = _events(db)
    assert (event.type, event.team, event.state) == ("job.cancelled", "vision", "ready")
    assert event.data["id"] == job["id"] and event.data["state"] == "CANCELLED"
    assert event.expand is False  # it never ran: no registry to read


def _publish(settings: ApiSettings, tmp_path: Path, version: str) -> None:
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights " + version.encode())
    registry.publish(settings.team_models_uri("vision"), "ppe", version, {"best.pt": weights},
                     {"source_job_id": version})


def test_an_alias_move_through_the_api_is_one_confirmed_event(
        client: TestClient, auth: dict[str, str], db: Database, settings: ApiSettings,
        tmp_path: Path) -> None:
    _publish(settings, tmp_path, "v1")
    _publish(settings, tmp_path, "v2")
    moved = client.post("/v1/models/ppe/aliases/champion", json={"version": "v1"}, headers=auth)
    assert moved.status_code == 200, moved.text
    conflict = client.post("/v1/models/ppe/aliases/champion",
                           json={"version": "v2", "expected_version": "v0"}, headers=auth)
    assert conflict.status_code == 409
    [event] = _events(db)
    move: dict[str, Any] = moved.json()
    assert (event.type, event.state) == ("alias.moved", "ready")
    assert {k: event.data[k] for k in ("model", "alias", "seq", "version")} == {
        "model": "ppe", "alias": "champion", "seq": 1, "version": "v1"} == {
        k: move[k] for k in ("model", "alias", "seq", "version")}


def test_the_cli_creates_lists_shows_deliveries_and_deletes(
        live_url: str, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINFORGE_URL", live_url)
    monkeypatch.setenv("TRAINFORGE_TOKEN", auth["Authorization"].split()[1])

    def cli(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, list(args))
        return result.exit_code, result.output

    code, out = cli("webhooks", "create", "http://127.0.0.1:9/hook", "-e", "model.promoted",
                    "-e", "alias.moved", "--description", "deployer")
    assert code == 0, out
    found = re.search(r"created (w[0-9a-z]+): model.promoted, alias.moved → ", out)
    assert found and re.search(r"^secret whsec_\S+$", out, re.M), out
    webhook_id = found.group(1)
    code, out = cli("webhooks", "list")
    assert code == 0 and webhook_id in out and "enabled" in out and "whsec_" not in out
    code, out = cli("webhooks", "deliveries", webhook_id)
    assert code == 0 and out.splitlines()[0].startswith("EVENT"), out
    code, out = cli("webhooks", "create", "https://10.0.0.5/hook", "-e", "job.failed")
    assert code == 1 and "private" in out, out
    assert cli("webhooks", "delete", webhook_id) == (0, f"{webhook_id}: deleted\n")
    code, out = cli("webhooks", "delete", webhook_id)
    assert code == 1 and "no webhook" in out, out
