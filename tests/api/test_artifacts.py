"""Artifacts: name, size, sha256 and a download URL valid ≤ 15 minutes (local and S3)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from services.api import artifacts, create_app
from services.api.settings import ApiSettings
from services.store import Database
from tests.fixtures.api import SECRET, submit
from trainforge.storage import S3Store


def test_local_artifacts_are_listed_and_served_by_signed_links(
    client: TestClient, auth: dict[str, str], artifacts_dir: Path
) -> None:
    job = submit(client, auth)
    weights = artifacts_dir / "jobs" / job["id"] / "train" / "best.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"\x00weights" * 1000)
    items = {i["name"]: i for i in
             client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json()["items"]}
    assert set(items) == {"spec.json", "train/best.pt"}
    best = items["train/best.pt"]
    assert best["size"] == 8000
    assert best["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    query = parse_qs(urlparse(best["url"]).query)
    assert 0 < int(query["expires"][0]) - time.time() <= 900
    download = client.get(best["url"])  # no bearer token: the link is the authorisation
    assert download.status_code == 200 and download.content == weights.read_bytes()

    tampered = best["url"].replace("best.pt", "../spec.json")
    assert client.get(tampered).status_code in {403, 404}
    forged = best["url"][:-4] + "0000"
    assert client.get(forged).status_code == 403
    expired = best["url"].replace(f"expires={query['expires'][0]}", "expires=1000")
    assert client.get(expired).status_code == 403


def test_s3_artifacts_get_presigned_urls_of_at_most_15_minutes(
    s3_bucket: str, settings: ApiSettings, db: Database, auth: dict[str, str]
) -> None:
    settings.artifacts_uri = f"s3://{s3_bucket}/tf"
    with TestClient(create_app(settings)) as client:
        job = submit(client, auth)
        store = S3Store(s3_bucket, endpoint_url=settings.s3_endpoint_url
                        or __import__("os").environ["TRAINFORGE_S3_ENDPOINT_URL"])
        store.put(f"tf/jobs/{job['id']}/train/best.pt", b"weights")
        items = {i["name"]: i for i in
                 client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).json()["items"]}
        assert job["spec_artifact"] == "spec.json" and "spec.json" in items
    best = items["train/best.pt"]
    assert best["sha256"] == hashlib.sha256(b"weights").hexdigest()
    query = parse_qs(urlparse(best["url"]).query)
    expires = int(query.get("X-Amz-Expires", query.get("Expires", ["0"]))[0])
    assert 0 < expires <= 900 or 0 < expires - time.time() <= 900
    assert httpx.get(best["url"]).content == b"weights"


@pytest.mark.parametrize("name", ["nope.txt", "../../secret-key", "train/../../../secret-key"])
def test_missing_or_escaping_names_are_404_even_with_a_valid_signature(
    client: TestClient, auth: dict[str, str], name: str
) -> None:
    job = submit(client, auth)
    expires = int(time.time()) + 60
    signature = artifacts.signature(SECRET, job["id"], name, expires)
    response = client.get(f"/v1/downloads/{job['id']}/{quote(name, safe='')}",
                          params={"expires": expires, "signature": signature})
    assert response.status_code == 404, response.text
