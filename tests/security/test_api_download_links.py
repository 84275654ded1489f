"""Download links: their signatures never reach the logs, and a link valid for longer than the
API ever issues is refused even when it is correctly signed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pytest
from fastapi import FastAPI

from services.api import artifacts, create_app
from services.api.log_redaction import RedactSignatures, redact
from services.api.settings import ApiSettings
from services.store import Database
from tests.fixtures.api import SECRET, SPEC
from tests.security.support import api_env, serve_api

S3_SECRETS = {
    "X-Amz-Signature": "f00dfeedf00dfeedf00dfeed",
    "X-Amz-Credential": "AKIAEXAMPLEKEY%2F20250101%2Fus-east-1%2Fs3%2Faws4_request",
    "X-Amz-Security-Token": "IQoJb3JpZ2luX2VjEXAMPLETOKEN",
    "Signature": "c2lnbmF0dXJlLXYy",
    "AWSAccessKeyId": "AKIDEXAMPLEV2",
}


def test_signed_urls_leave_no_secret_in_the_access_log(
    tmp_path: Path, database_url: str, artifacts_dir: Path, db: Database,
    make_token: Callable[[str], str],
) -> None:
    headers = {"Authorization": f"Bearer {make_token('vision')}"}
    env = api_env(tmp_path, database_url, artifacts_dir)
    log_path = tmp_path / "api.log"
    with serve_api(env, log_path) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        job = client.post("/v1/jobs", json={"spec": SPEC}, headers=headers)
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        weights = artifacts_dir / "jobs" / job_id / "train" / "best.pt"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"weights" * 100)
        listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()["items"]
        url = next(i["url"] for i in listed if i["name"] == "train/best.pt")
        query = parse_qs(urlparse(url).query)
        signature, expires = query["signature"][0], query["expires"][0]
        download = client.get(url)
        assert download.status_code == 200 and download.content == weights.read_bytes()
        # A presigned S3 URL pasted at the API (its query reaches the access log as sent).
        pasted = client.get("/v1/downloads/x/y", params={"expires": "1", **S3_SECRETS})
        assert pasted.status_code in {403, 422}
    log = log_path.read_text()  # the server has exited: everything is flushed
    downloads = [line for line in log.splitlines() if "/v1/downloads/" in line]
    assert len(downloads) == 2, log
    assert "signature=REDACTED" in downloads[0] and f"expires={expires}" in downloads[0]
    assert signature not in log
    for name, value in S3_SECRETS.items():
        assert f"{name}=REDACTED" in downloads[1]
        assert value not in log, name


@pytest.mark.parametrize(("text", "expected"), [
    ("GET /v1/downloads/j/a.pt?expires=9&signature=abc HTTP/1.1",
     "GET /v1/downloads/j/a.pt?expires=9&signature=REDACTED HTTP/1.1"),
    ("/x?SIGNATURE=abc&y=1", "/x?SIGNATURE=REDACTED&y=1"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AK%2F1"
     "&X-Amz-Date=1&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=T"
     "&X-Amz-Signature=ff",
     "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED"
     "&X-Amz-Date=1&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=REDACTED"
     "&X-Amz-Signature=REDACTED"),
    ("http://m/k?AWSAccessKeyId=AK&Signature=s%2B&Expires=5",
     "http://m/k?AWSAccessKeyId=REDACTED&Signature=REDACTED&Expires=5"),
    ("no query here, signature=kept-outside-a-url", "no query here, signature=kept-outside-a-url"),
    ("/v1/jobs?state=RUNNING", "/v1/jobs?state=RUNNING"),
    # Names a server decodes to a secret one are secret names too.
    ("/d?expires=1&%73ignature=abc", "/d?expires=1&%73ignature=REDACTED"),
    ("/d?%2573ignature=abc&x=1", "/d?%2573ignature=REDACTED&x=1"),
    ("/d?Sig%6Eature=abc;X-Amz-%53ignature=ff",
     "/d?Sig%6Eature=REDACTED;X-Amz-%53ignature=REDACTED"),
    ("/d?signature+=abc&+signature=def", "/d?signature+=REDACTED&+signature=REDACTED"),
])
def test_redaction_covers_our_links_and_s3_presigning(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_an_encoded_or_repeated_signature_is_refused_and_never_logged(
    tmp_path: Path, database_url: str, artifacts_dir: Path, db: Database,
    make_token: Callable[[str], str],
) -> None:
    """The attack: ``?expires=…&%73ignature=<sig>`` downloaded the file (the route reads the
    name decoded) while the access log, matching names as sent, showed the signature."""
    headers = {"Authorization": f"Bearer {make_token('vision')}"}
    env = api_env(tmp_path, database_url, artifacts_dir)
    log_path = tmp_path / "api.log"
    with serve_api(env, log_path) as api, httpx.Client(base_url=api.url, timeout=30) as client:
        job_id = client.post("/v1/jobs", json={"spec": SPEC}, headers=headers).json()["id"]
        (artifacts_dir / "jobs" / job_id / "model.pt").write_bytes(b"weights")
        listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=headers).json()["items"]
        url = urlparse(next(i["url"] for i in listed if i["name"] == "model.pt"))
        query = parse_qs(url.query)
        expires, sig = query["expires"][0], query["signature"][0]
        spellings = {
            "encoded name": f"expires={expires}&%73ignature={sig}",
            "twice-encoded name": f"expires={expires}&%2573ignature={sig}",
            "repeated name": f"expires={expires}&signature=0&signature={sig}",
            "encoded expiry name": f"%65xpires={expires}&signature={sig}",
            "extra parameter": f"expires={expires}&signature={sig}&download=1",
        }
        for what, raw in spellings.items():
            refused = client.get(f"{url.path}?{raw}")
            assert refused.status_code in {403, 422}, (what, refused.status_code)
            assert refused.content != b"weights", what
        assert client.get(f"{url.path}?{url.query}").content == b"weights"  # as issued
    log = log_path.read_text()  # the server has exited: everything is flushed
    downloads = [line for line in log.splitlines() if url.path in line]
    assert len(downloads) == len(spellings) + 1, log
    assert sig not in log


def test_every_app_installs_the_filter_on_uvicorns_loggers(
    settings: ApiSettings, db: Database,
) -> None:
    # `trainforge serve` and `python -m services.api` both build the app with create_app.
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).filters[:] = [
            f for f in logging.getLogger(name).filters if not isinstance(f, RedactSignatures)]
    create_app(settings)
    create_app(settings)
    for name in ("uvicorn.access", "uvicorn.error"):
        installed = [f for f in logging.getLogger(name).filters
                     if isinstance(f, RedactSignatures)]
        assert len(installed) == 1, name  # once, however many apps a process builds
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", "/v1/downloads/j/a?expires=1&signature=s",
                                "1.1", 200), None)
    assert installed[0].filter(record)
    assert record.getMessage() == (
        '127.0.0.1:1 - "GET /v1/downloads/j/a?expires=1&signature=REDACTED HTTP/1.1" 200')


def _artifact(live_url: str, auth: dict[str, str], artifacts_dir: Path) -> str:
    job = httpx.post(f"{live_url}/v1/jobs", json={"spec": SPEC}, headers=auth, timeout=30)
    assert job.status_code == 201, job.text
    job_id: str = job.json()["id"]
    path = artifacts_dir / "jobs" / job_id / "train" / "best.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    return job_id


def _download(live_url: str, job_id: str, expires: int) -> httpx.Response:
    name = "train/best.pt"
    signature = artifacts.signature(SECRET, job_id, name, expires)  # the real secret
    return httpx.get(f"{live_url}/v1/downloads/{job_id}/{quote(name)}",
                     params={"expires": expires, "signature": signature}, timeout=30)


def test_a_correctly_signed_link_expiring_too_late_is_refused(
    live_url: str, auth: dict[str, str], artifacts_dir: Path, app: FastAPI,
) -> None:
    ttl = app.state.trainforge.settings.download_url_ttl_s
    job_id = _artifact(live_url, auth, artifacts_dir)
    now = int(time.time())
    for expires in (now + 10 * 365 * 86400, now + ttl + 60, 2**62):
        refused = _download(live_url, job_id, expires)
        assert refused.status_code == 403, (expires, refused.text)
        assert refused.json()["code"] == "download_link_invalid"
        assert f"more than {ttl} s from now" in refused.json()["detail"]
    # What the API issues (now + ttl), and a little clock slack, still download.
    for expires in (now + ttl, now + ttl + 2):
        accepted = _download(live_url, job_id, expires)
        assert accepted.status_code == 200 and accepted.content == b"weights", accepted.text


def test_the_expiry_cap_follows_the_configured_ttl(
    settings: ApiSettings, db: Database, artifacts_dir: Path,
    make_token: Callable[[str], str],
) -> None:
    from tests.fixtures.network import serve_app

    settings.download_url_ttl_s = 60
    headers = {"Authorization": f"Bearer {make_token('vision')}"}
    with serve_app(create_app(settings)) as url:
        job_id = _artifact(url, headers, artifacts_dir)
        now = int(time.time())
        assert _download(url, job_id, now + 300).status_code == 403
        assert _download(url, job_id, now + 55).status_code == 200
