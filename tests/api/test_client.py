"""The Python client: retried submissions are accepted once; pages, errors and downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from services.store import Database
from services.store import jobs as repo
from tests.fixtures.api import SPEC
from trainforge.client import KEEPALIVE_EXPIRY_S, RELISTS_WHILE_INCOMPLETE, ApiError, Client
from trainforge.spec import parse_spec


class LosesFirstResponse(httpx.HTTPTransport):
    """Delivers every request, but drops the first response (a connection reset after the
    server did the work): the situation Idempotency-Key exists for."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.requests += 1
        if self.requests == 1:
            response.read()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


def test_a_retried_submit_makes_one_job(live_url: str, auth: dict[str, str], db: Database) -> None:
    transport = LosesFirstResponse()
    token = auth["Authorization"].split()[1]
    with Client(live_url, token, transport=transport) as client:
        job = client.submit(parse_spec(SPEC))
    assert transport.requests == 2
    with db.transaction() as session:
        listed, _ = repo.list_jobs(session, "vision")
    assert [j.id for j in listed] == [job["id"]]


def test_client_round_trip(live_url: str, auth: dict[str, str], artifacts_dir: Path) -> None:
    token = auth["Authorization"].split()[1]
    with Client(live_url, token) as client:
        ids = [client.submit({**SPEC, "name": f"job-{i}"})["id"] for i in range(3)]
        assert [j["id"] for j in client.list_jobs(page_size=2)] == list(reversed(ids))
        assert client.get(ids[0])["state"] == "QUEUED"
        assert client.cancel(ids[0])["state"] == "CANCELLED"
        assert [e["to_state"] for e in client.events(ids[0])] == ["QUEUED", "CANCELLED"]
        with pytest.raises(ApiError) as info:
            client.submit({**SPEC, "train": {"epochs": 0}})
        assert info.value.status == 422 and info.value.code == "validation_failed"
        assert info.value.errors[0]["path"] == "spec.train.epochs"
        with pytest.raises(ApiError) as missing:
            client.get("j" + "0" * 26)
        assert missing.value.status == 404
        weights = artifacts_dir / "jobs" / ids[1] / "train" / "best.pt"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(b"weights" * 100)
        files = client.download(ids[1], artifacts_dir.parent / "download")
        names = sorted(p.name for p in files)
        assert names == ["best.pt", "spec.json"]
        best = next(p for p in files if p.name == "best.pt")
        assert hashlib.sha256(best.read_bytes()).hexdigest() == \
            hashlib.sha256(weights.read_bytes()).hexdigest()


def test_the_client_reads_url_and_token_from_the_environment(
    live_url: str, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRAINFORGE_URL", live_url)
    monkeypatch.delenv("TRAINFORGE_TOKEN", raising=False)
    monkeypatch.setenv("TRAINFORGE_HOME", str(tmp_path))
    from trainforge.settings import get_common_settings

    get_common_settings.cache_clear()
    try:
        (tmp_path / "dev-token").write_text(auth["Authorization"].split()[1] + "\n")
        with Client() as client:  # the embedded server's dev-token
            assert list(client.list_jobs()) == []
        monkeypatch.setenv("TRAINFORGE_TOKEN", "tf_0000000000000000_nope")
        with Client() as client, pytest.raises(ApiError) as info:
            list(client.list_jobs())
        assert info.value.status == 401
    finally:
        get_common_settings.cache_clear()


class RewritesTheLog(httpx.HTTPTransport):
    """Appends a line to a job's log (on disk, in the artifacts store) just before each of its
    first ``rewrites`` downloads: what a run does when it uploads its last log lines as it
    exits, after the client listed the artifacts. Counts the listings."""

    def __init__(self, log: Path, rewrites: int) -> None:
        super().__init__()
        self.log, self.rewrites, self.listings = log, rewrites, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/artifacts"):
            self.listings += 1
        elif request.url.path.endswith("/log.txt") and self.rewrites:
            self.rewrites -= 1
            with self.log.open("a") as fh:
                fh.write("epoch 2/2 done\n")
        return super().handle_request(request)


def test_a_file_that_changes_before_its_download_is_listed_again(
    live_url: str, auth: dict[str, str], artifacts_dir: Path, tmp_path: Path
) -> None:
    token = auth["Authorization"].split()[1]
    with Client(live_url, token) as client:
        job = client.submit(parse_spec(SPEC))["id"]  # QUEUED: its listing is not complete
    log = artifacts_dir / "jobs" / job / "attempts" / "1" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("epoch 1/2 done\n")

    once = RewritesTheLog(log, rewrites=1)
    with Client(live_url, token, transport=once) as client:
        files = client.download(job, tmp_path / "once")
    assert once.listings == 2
    assert (tmp_path / "once" / "attempts" / "1" / "log.txt").read_text() == log.read_text()
    assert sorted(p.name for p in files) == ["log.txt", "spec.json"]

    always = RewritesTheLog(log, rewrites=100)
    with Client(live_url, token, transport=always) as client, \
            pytest.raises(ApiError) as changing:
        client.download(job, tmp_path / "always")
    assert changing.value.code == "checksum_mismatch"
    assert always.listings == 1 + RELISTS_WHILE_INCOMPLETE


def test_the_client_drops_idle_connections_before_the_server_closes_them() -> None:
    """uvicorn (the API's server, `trainforge serve` and Dockerfile.api) closes a connection
    idle for ``timeout_keep_alive`` seconds; a client that kept it as long could send its next
    request on it as it closes ("Server disconnected without sending a response")."""
    import uvicorn

    assert KEEPALIVE_EXPIRY_S < uvicorn.Config(app="services.api.app:create_app"
                                               ).timeout_keep_alive
    with Client("http://127.0.0.1:9", token="tf_x") as client:
        pool = client._http._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry == KEEPALIVE_EXPIRY_S
