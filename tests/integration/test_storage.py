"""The storage interface, against the loopback S3 server and a local directory alike."""

from __future__ import annotations

import hashlib
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from trainforge.errors import BucketNotFound, ObjectNotFound, StorageError
from trainforge.storage import LocalStore, ObjectStore, S3Store, open_location, parse_uri


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")
        yield S3Store(bucket, endpoint_url=endpoint)
    else:
        yield LocalStore(tmp_path / "store")


def test_put_get_head_list_delete(store: ObjectStore) -> None:
    info = store.put("a/b/one.txt", b"hello")
    assert info.size == 5 and info.sha256 == hashlib.sha256(b"hello").hexdigest()
    store.put("a/b/two.txt", b"world!")
    store.put("a/c.txt", b"x")
    assert store.get("a/b/one.txt") == b"hello"
    assert store.head("a/b/two.txt").size == 6
    assert [o.key for o in store.list("a/b/")] == ["a/b/one.txt", "a/b/two.txt"]
    assert [o.key for o in store.list("a/")] == ["a/b/one.txt", "a/b/two.txt", "a/c.txt"]
    assert store.exists("a/c.txt")
    store.delete("a/c.txt")
    store.delete("a/c.txt")  # deleting twice is fine
    assert not store.exists("a/c.txt")


def test_missing_object_error_names_the_uri(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="no object .*nope/x.bin"):
        store.get("nope/x.bin")
    with pytest.raises(ObjectNotFound):
        store.head("nope/x.bin")


def test_put_if_absent_creates_once_even_under_races(store: ObjectStore) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        created = store.put_if_absent("manifest.json", f"writer {i}".encode())
        with lock:
            results.append(created)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    winner = results.index(True)
    assert store.get("manifest.json").startswith(b"writer ")
    assert len(results) == 8 and winner >= 0


def test_upload_download_large_file_multipart(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    data = bytes(range(256)) * (80 * 1024 + 7)  # ~20 MiB: above the multipart threshold
    src.write_bytes(data)
    info = store.upload(src, "weights/big.bin")
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    dest = tmp_path / "out" / "big.bin"
    store.download("weights/big.bin", dest)
    assert dest.read_bytes() == data
    assert not list(dest.parent.glob(".big.bin.*")), "no partial file is left behind"


def test_copy_keeps_content_and_sha256_and_refuses_a_missing_source(
    store: ObjectStore, tmp_path: Path
) -> None:
    src = tmp_path / "big.bin"
    data = bytes(range(256)) * (80 * 1024 + 7)  # ~20 MiB: a multipart copy on S3
    src.write_bytes(data)
    store.upload(src, "jobs/a/checkpoints/last.pt")
    store.put("jobs/b/checkpoints/last.pt", b"older")
    info = store.copy("jobs/a/checkpoints/last.pt", "jobs/b/checkpoints/last.pt")
    assert info.size == len(data) and store.get("jobs/b/checkpoints/last.pt") == data
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    if isinstance(store, S3Store):  # what the artifacts listing reads (a local store hashes)
        assert store.head("jobs/b/checkpoints/last.pt").sha256 == info.sha256
    assert store.get("jobs/a/checkpoints/last.pt") == data, "the source is left as it was"
    with pytest.raises(ObjectNotFound, match="jobs/a/checkpoints/best.pt"):
        store.copy("jobs/a/checkpoints/best.pt", "jobs/b/checkpoints/best.pt")
    assert not store.exists("jobs/b/checkpoints/best.pt")


def test_presigned_url_reads_without_credentials(s3_server: str, s3_bucket: str) -> None:
    store = S3Store(s3_bucket, endpoint_url=s3_server)
    store.put("report.json", b'{"ok": true}')
    url = store.presign("report.json", expires_s=900)
    assert "Expires=" in url or "X-Amz-Expires=900" in url
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (loopback)
        assert resp.read() == b'{"ok": true}'
    with pytest.raises(StorageError, match="15 minutes"):
        store.presign("report.json", expires_s=3600)


def test_missing_bucket_says_so(s3_server: str) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=s3_server)
    with pytest.raises(BucketNotFound, match="no-such-bucket-here.*does not exist"):
        store.get("x")
    with pytest.raises(BucketNotFound):
        store.head("x")


def test_s3_records_sha256_checksum(s3_server: str, s3_bucket: str) -> None:
    S3Store(s3_bucket, endpoint_url=s3_server).put("k", b"payload")
    head = boto3.client("s3", endpoint_url=s3_server).head_object(
        Bucket=s3_bucket, Key="k", ChecksumMode="ENABLED"
    )
    assert head["Metadata"]["sha256"] == hashlib.sha256(b"payload").hexdigest()
    assert head.get("ChecksumSHA256")


def test_uri_parsing(tmp_path: Path) -> None:
    assert parse_uri("s3://bucket/a/b") == ("s3", "bucket", "a/b")
    assert parse_uri("file:///data/x") == ("file", "/", "data/x")
    with pytest.raises(StorageError, match="no bucket"):
        parse_uri("s3:///x")
    with pytest.raises(StorageError, match="unsupported"):
        parse_uri("gs://bucket/x")
    store, key = open_location(f"file://{tmp_path}/ds/")
    assert key.endswith("ds/") and isinstance(store, LocalStore)


def test_local_store_refuses_keys_escaping_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    with pytest.raises(StorageError, match="escapes"):
        store.put("../outside.txt", b"x")
