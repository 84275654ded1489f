"""/v1/models: a team's models, aliases, promotion and comparison, and nothing of another
team's (every route answers another team's model exactly as a missing one: 404)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.settings import ApiSettings
from trainforge.client import ApiError, Client
from trainforge.registry import publish


def _evaluation(ap: float, vest: float | None = None) -> dict[str, Any]:
    per_class = [{"name": "helmet", "images": 9, "AP50": ap, "AP50-95": ap},
                 {"name": "vest", "images": 9, "AP50": vest if vest is not None else ap,
                  "AP50-95": vest if vest is not None else ap}]
    return {"split": "test", "per_class": per_class,
            "metrics": {"mAP50": ap, "mAP50-95": ap, "precision": 0.9, "recall": 0.8}}


@pytest.fixture()
def team_a(settings: ApiSettings, tmp_path: Path, make_token: Callable[[str], str]
           ) -> dict[str, str]:
    """Team A's token, with ppe@j1 (0.50), ppe@j2 (0.60, vest down) and ppe@j3 (0.70)."""
    root = settings.team_models_uri("team-a")
    (tmp_path / "best.pt").write_bytes(b"weights")
    for version, evaluation in (("j1", _evaluation(0.5)), ("j2", _evaluation(0.6, vest=0.4)),
                                ("j3", _evaluation(0.7))):
        publish(root, "ppe", version, {"best.pt": tmp_path / "best.pt"},
                {"evaluation": evaluation, "dataset": {"fingerprint": "a" * 64, "uri": "s3://x/"},
                 "metrics": evaluation["metrics"]})
    return {"Authorization": f"Bearer {make_token('team-a')}"}


def test_promote_show_and_roll_back(client: TestClient, team_a: dict[str, str]) -> None:
    assert client.get("/v1/models", headers=team_a).json() == {
        "items": [{"name": "ppe", "versions": 3, "latest": "j3", "aliases": {}}]}
    moved = client.post("/v1/models/ppe/aliases/champion", headers=team_a,
                        json={"version": "j3", "reason": "best so far"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["actor"] == "team team-a (API)"
    rollback = client.post("/v1/models/ppe/aliases/champion", headers=team_a,
                           json={"version": "j1", "reason": "j3 fails at night",
                                 "expected_version": "j3"})
    assert rollback.json()["previous"] == "j3" and rollback.json()["seq"] == 2
    stale = client.post("/v1/models/ppe/aliases/champion", headers=team_a,
                        json={"version": "j2", "expected_version": "j3"})
    assert stale.status_code == 409, stale.text
    assert stale.json()["code"] == "alias_conflict"
    model = client.get("/v1/models/ppe", headers=team_a).json()
    assert model["aliases"]["champion"]["version"] == "j1"
    assert [m["reason"] for m in model["history"]] == ["best so far", "j3 fails at night"]
    assert {v["version"]: v["aliases"] for v in model["versions"]} == \
        {"j1": ["champion"], "j2": [], "j3": []}
    assert model["versions"][0]["metrics"]["mAP50-95"] == 0.5


def test_compare_recorded_scores_with_a_policy(client: TestClient, team_a: dict[str, str]
                                               ) -> None:
    client.post("/v1/models/ppe/aliases/champion", headers=team_a, json={"version": "j1"})
    response = client.post("/v1/models/ppe/compare", headers=team_a,
                           json={"challenger": "j2", "champion": "champion"})
    assert response.status_code == 200, response.text
    comparison = response.json()
    assert comparison["deltas"]["mAP50-95"] == pytest.approx(0.1)
    assert comparison["verdict"]["promote"] is False
    assert "class 'vest' dropped 0.100 > 0.020" in comparison["verdict"]["summary"]
    lenient = client.post("/v1/models/ppe/compare", headers=team_a, json={
        "challenger": "j2", "policy": {"max_class_ap50_95_drop": None}}).json()
    assert lenient["verdict"]["promote"] is True


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/models/ppe", None),
    ("POST", "/v1/models/ppe/aliases/champion", {"version": "j1"}),
    ("POST", "/v1/models/ppe/compare", {"challenger": "j2", "champion": "j1"}),
])
def test_another_team_gets_404_as_for_a_missing_model(
        client: TestClient, team_a: dict[str, str], make_token: Callable[[str], str],
        method: str, path: str, body: dict[str, Any] | None) -> None:
    team_b = {"Authorization": f"Bearer {make_token('team-b')}"}
    response = client.request(method, path, headers=team_b, json=body)
    assert response.status_code == 404, response.text
    missing = client.request(method, path.replace("ppe", "nope"), headers=team_b, json=body)
    assert missing.status_code == 404
    assert response.json()["detail"].replace("ppe", "X") == \
        missing.json()["detail"].replace("nope", "X")
    assert client.get("/v1/models", headers=team_b).json() == {"items": []}
    # Team B publishing its own "ppe" lives beside A's, never over it.
    assert client.get("/v1/models/ppe", headers=team_a).status_code == 200


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/v1/models/ppe/aliases/latest", {"version": "j1"}, 422),
    ("/v1/models/ppe/aliases/Champion", {"version": "j1"}, 422),
    ("/v1/models/ppe/aliases/champion", {"version": "../j1"}, 422),
    ("/v1/models/ppe/aliases/champion", {"version": "j1", "extra": 1}, 422),
    ("/v1/models/ppe/aliases/champion", {"version": "j9"}, 404),
    ("/v1/models/PPE/compare", {"challenger": "j1"}, 422),
])
def test_bad_requests_say_what_to_change(client: TestClient, team_a: dict[str, str], path: str,
                                         body: dict[str, Any], status: int) -> None:
    response = client.post(path, headers=team_a, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_the_python_client(live_url: str, team_a: dict[str, str]) -> None:
    token = team_a["Authorization"].split()[1]
    with Client(live_url, token=token) as api:
        assert api.list_models()[0]["name"] == "ppe"
        move = api.promote("ppe", "j3", reason="nightly")
        assert move["version"] == "j3"
        with pytest.raises(ApiError) as conflict:
            api.promote("ppe", "j1", expected_version="j2")
        assert conflict.value.status == 409
        assert api.get_model("ppe")["aliases"]["champion"]["version"] == "j3"
        assert api.compare_models("ppe", "j3", "j1")["verdict"]["promote"] is True
