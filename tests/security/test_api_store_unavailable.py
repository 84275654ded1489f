"""A broken, full or read-only artifacts store is a 503 that says so: never a 500, never an
empty 200, and /readyz reports it.

The API is served by uvicorn on a loopback port and spoken to over HTTP. The stores are real:
a local directory replaced by a regular file, a bucket deleted from the loopback S3 server,
and a small tmpfs filled to the last byte or remounted read-only (mounting needs root; the
test says so and skips where it cannot mount).
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from services.api import create_app
from services.api.health import STORE_PROBE_TTL_S
from services.api.settings import ApiSettings
from services.store import Database
from tests.fixtures.api import SPEC, claim_all
from tests.fixtures.network import free_port, serve_app
from trainforge.storage import S3Store

UNAVAILABLE = "the object store is unavailable"


def _submit(client: httpx.Client) -> httpx.Response:
    return client.post("/v1/jobs", json={"spec": SPEC})


def _job_with_a_log(client: httpx.Client, db: Database,
                    put: Callable[[str, bytes], None]) -> str:
    """A submitted, claimed job (attempt 1) with a log and an artifact in the store."""
    created = _submit(client)
    assert created.status_code == 201, created.text
    job_id: str = created.json()["id"]
    claim_all(db)
    put(f"jobs/{job_id}/attempts/1/log.txt", b"epoch 1/3\n")
    put(f"jobs/{job_id}/train/best.pt", b"weights")
    # Healthy first: the reads below are what a broken store must not answer like this.
    assert client.get(f"/v1/jobs/{job_id}/logs").text == "epoch 1/3\n"
    names = {i["name"] for i in client.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]}
    assert names == {"spec.json", "attempts/1/log.txt", "train/best.pt"}
    return job_id


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 503 and body["detail"].startswith(UNAVAILABLE), body
    # The client learns the store is down, not where it lives.
    assert "file://" not in body["detail"] and "s3://" not in body["detail"]


def _assert_not_ready(client: httpx.Client) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.headers["content-type"] == "application/problem+json"
    body = ready.json()
    assert body["code"] == "not_ready" and "object_store" in body["detail"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["object_store"].startswith("error: "), body


def _assert_every_route_unavailable(client: httpx.Client, job_id: str) -> None:
    _assert_unavailable(_submit(client))
    _assert_not_ready(client)
    _assert_unavailable(client.get(f"/v1/jobs/{job_id}/artifacts"))
    _assert_unavailable(client.get(f"/v1/jobs/{job_id}/logs"))
    _assert_unavailable(client.get(f"/v1/jobs/{job_id}/logs", params={"follow": "true"}))


def test_a_store_directory_replaced_by_a_file_is_503_everywhere(
    settings: ApiSettings, db: Database, artifacts_dir: Path,
    make_token: Callable[[str], str],
) -> None:
    def put(key: str, data: bytes) -> None:
        path = artifacts_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    headers = {"Authorization": f"Bearer {make_token('vision')}"}
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, headers=headers,
                                                         timeout=30) as client:
        assert client.get("/readyz").status_code == 200
        job_id = _job_with_a_log(client, db, put)
        shutil.rmtree(artifacts_dir)
        artifacts_dir.write_text("not a directory any more\n")
        time.sleep(STORE_PROBE_TTL_S + 0.1)  # let the cached "ok" from before expire
        _assert_every_route_unavailable(client, job_id)


def test_a_deleted_bucket_is_503_everywhere(
    settings: ApiSettings, db: Database, s3_bucket: str,
    make_token: Callable[[str], str],
) -> None:
    import boto3

    settings.artifacts_uri = f"s3://{s3_bucket}/tf"
    endpoint = os.environ["TRAINFORGE_S3_ENDPOINT_URL"]
    store = S3Store(s3_bucket, endpoint_url=endpoint)

    def put(key: str, data: bytes) -> None:
        store.put(f"tf/{key}", data)

    headers = {"Authorization": f"Bearer {make_token('vision')}"}
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, headers=headers,
                                                         timeout=60) as client:
        job_id = _job_with_a_log(client, db, put)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for info in store.list(""):
            s3.delete_object(Bucket=s3_bucket, Key=info.key)
        s3.delete_bucket(Bucket=s3_bucket)
        _assert_every_route_unavailable(client, job_id)
        assert client.get("/readyz").json()["checks"]["object_store"] == "error: bucket_not_found"


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``path`` (needs root); unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                                 "tmpfs", str(path)], capture_output=True, text=True, timeout=30)
        failure = ""
        if result.returncode != 0:
            failure = result.stderr.strip() or f"mount exited with {result.returncode}"
    except FileNotFoundError as exc:  # no mount(8) here
        failure = str(exc)
    if failure:
        reason = (f"cannot mount a tmpfs at {path} ({failure}): a full or read-only store needs "
                  "a small file system of its own (run as root)")
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def _fill(directory: Path) -> None:
    """Write until the file system has no byte left (ENOSPC), then check that it has none."""
    with (directory / ".filler").open("wb", buffering=0) as fh:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    with pytest.raises(OSError) as full:
        (directory / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC


@pytest.mark.parametrize("condition", ["full", "read-only"])
def test_a_full_or_read_only_store_refuses_writes_with_503_and_is_not_ready(
    condition: str, settings: ApiSettings, db: Database, tmp_path: Path,
    make_token: Callable[[str], str],
) -> None:
    with tmpfs(tmp_path / "store", "1m") as store_dir:
        settings.artifacts_uri = f"file://{store_dir}"

        def put(key: str, data: bytes) -> None:
            path = store_dir / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        headers = {"Authorization": f"Bearer {make_token('vision')}"}
        with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, headers=headers,
                                                             timeout=30) as client:
            job_id = _job_with_a_log(client, db, put)
            if condition == "full":
                _fill(store_dir)
            else:
                subprocess.run(["mount", "-o", "remount,ro", str(store_dir)], check=True,
                               capture_output=True, timeout=30)
            _assert_unavailable(_submit(client))
            _assert_not_ready(client)
            # Reads still work on a full or read-only file system: the job's artifacts and
            # log are served as they are (an honest 200 with the content, not an empty one).
            log = client.get(f"/v1/jobs/{job_id}/logs")
            assert log.status_code == 200 and log.text == "epoch 1/3\n"
            items = client.get(f"/v1/jobs/{job_id}/artifacts")
            assert items.status_code == 200, items.text
            assert {i["name"] for i in items.json()["items"]} == {
                "spec.json", "attempts/1/log.txt", "train/best.pt"}
            jobs = client.get("/v1/jobs").json()["items"]
            assert [j["id"] for j in jobs] == [job_id]  # the refused submission left no job


def test_store_errors_are_storage_errors_not_os_or_botocore_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the routes above rely on, at the store: a missing object is ObjectNotFound, a
    store that cannot serve is a StorageError (503), never an OSError or a botocore error."""
    from trainforge.errors import ObjectNotFound, StorageError
    from trainforge.storage import LocalStore

    root = tmp_path / "store"
    store = LocalStore("/")
    key = str(root / "jobs" / "j1" / "log.txt").lstrip("/")
    with pytest.raises(ObjectNotFound):
        store.get(key)  # nothing written yet: a job without a log
    assert list(store.list(str(root).lstrip("/") + "/")) == []
    store.put(key, b"x")
    assert store.get(key) == b"x" and store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.get(str(root / "jobs").lstrip("/"))  # a directory is not an object
    shutil.rmtree(root)
    root.write_text("a file where the store's directory was\n")
    for call in (lambda: store.get(key), lambda: store.head(key), lambda: store.exists(key),
                 lambda: list(store.list(key.rsplit("/", 1)[0] + "/")),
                 lambda: store.put(key, b"y"), lambda: store.put_if_absent(key, b"y"),
                 lambda: store.delete(key)):
        with pytest.raises(StorageError) as failed:
            call()
        assert not isinstance(failed.value, ObjectNotFound)
        assert "a file stands where the store expects a directory" in failed.value.message

    # An S3 endpoint nobody listens on: botocore's EndpointConnectionError, mapped.
    from trainforge.storage import S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    down = S3Store("bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(StorageError, match="Could not connect"):
        down.put("k", b"x")  # retried by botocore for a few seconds first
