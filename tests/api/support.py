"""Helpers shared by the API tests (fixtures live in conftest.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from services.store import Database, tokens

#: yolov8n.yaml: the default base (yolov8n.pt) is refused by an offline embedded server without
#: it in its weights cache, which is what these tests run (YOLO_OFFLINE=1).
SPEC = {"name": "ppe-detector", "dataset": {"uri": "s3://datasets/ppe/v3/"},
        "model": {"base": "yolov8n.yaml"}, "train": {"epochs": 3}}
#: The API's secret key in these tests (see conftest.settings).
SECRET = b"test-secret-key-not-a-placeholder"


def submit(client: TestClient, headers: dict[str, str], spec: dict | None = None,
           **extra_headers: str) -> dict:
    """POST a job (default SPEC) and return its JSON; fails the test unless 201."""
    response = client.post("/v1/jobs", json={"spec": spec or SPEC},
                           headers={**headers, **extra_headers})
    assert response.status_code == 201, response.text
    return response.json()


def claim_all(database: Database) -> dict[str, str]:
    """Claim every queued job as a dispatcher would; returns {job id: its job token}."""
    from services.store import dispatch

    with database.transaction() as session:
        claimed = dispatch.claim(
            session, owner="test", backend="test", limit=1000,
            token_sha256=lambda job_id, n: tokens.sha256_hex(tokens.job_token(SECRET, job_id, n)),
        )
    return {a.job.id: tokens.job_token(SECRET, a.job.id, a.attempt.number) for a in claimed}
