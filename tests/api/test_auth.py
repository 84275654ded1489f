"""Bearer tokens: team-bound, stored hashed, revocable; job tokens open only their own route."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.store import Database, tokens
from tests.fixtures.api import SPEC, claim_all, submit


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer nonsense", "Basic dmlzaW9uOnB3", "Bearer tf_0123456789abcdef_x",
     "Bearer tf_zz_y"],
    ids=["missing", "empty", "garbage", "basic", "unknown-id", "malformed-id"],
)
def test_requests_without_a_valid_token_get_401(client: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = client.get("/v1/jobs", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_with_the_right_id_and_a_wrong_secret_is_refused(
    client: TestClient, make_token: Callable[[str], str]
) -> None:
    token = make_token("vision")
    forged = token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_tokens_are_stored_hashed(db: Database, make_token: Callable[[str], str]) -> None:
    token = make_token("vision")
    secret = token.split("_", 2)[2]
    with db.transaction() as session:
        rows = session.execute(text("SELECT id, team, secret_sha256 FROM api_tokens")).all()
    assert len(rows) == 1 and rows[0].team == "vision"
    assert secret not in str(tuple(rows[0])) and rows[0].secret_sha256 == tokens.sha256_hex(secret)


def test_revoked_token_gets_401(
    client: TestClient, db: Database, make_token: Callable[[str], str]
) -> None:
    token = make_token("vision")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with db.transaction() as session:
        tokens.revoke_token(session, token)
    assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_probes_and_metrics_are_anonymous(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


def test_job_tokens_do_not_open_user_routes_and_user_tokens_not_internal_ones(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    job = submit(client, auth)
    job_token = claim_all(db)[job["id"]]
    as_job = {"Authorization": f"Bearer {job_token}"}
    assert client.get(f"/v1/jobs/{job['id']}", headers=as_job).status_code == 401
    event = {"type": "message", "message": "hello"}
    assert client.post(f"/internal/v1/jobs/{job['id']}/events", json=event,
                       headers=auth).status_code == 401
    assert client.post(f"/internal/v1/jobs/{job['id']}/events", json=event,
                       headers=as_job).status_code == 202


def test_a_job_token_opens_only_its_own_job(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    a = submit(client, auth)
    b = submit(client, auth, spec={**SPEC, "name": "other"})
    issued = claim_all(db)
    event = {"type": "message", "message": "hello"}
    response = client.post(f"/internal/v1/jobs/{b['id']}/events", json=event,
                           headers={"Authorization": f"Bearer {issued[a['id']]}"})
    assert response.status_code == 401


def test_a_revoked_token_stops_working_once_the_cache_entry_expires(
    client: TestClient, db: Database, make_token: Callable[[str], str]
) -> None:
    state = client.app.state.trainforge  # type: ignore[attr-defined]
    state.token_cache.ttl_s = 0.3
    token = make_token("vision")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with db.transaction() as session:
        tokens.revoke_token(session, token)
    assert client.get("/v1/jobs", headers=headers).status_code == 200  # cached
    time.sleep(0.4)
    assert client.get("/v1/jobs", headers=headers).status_code == 401
