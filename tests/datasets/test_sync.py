"""Fingerprints and the dataset cache, against the loopback S3 server and local directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest

from tests.fixtures.s3 import upload_tree
from trainforge.datasets import SyncResult, fingerprint, sync, validate
from trainforge.errors import DatasetIntegrityError, DatasetNotFound
from trainforge.storage import S3Store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def s3_dataset(dataset: Path, s3_bucket: str, s3_server: str) -> str:
    upload_tree(S3Store(s3_bucket, endpoint_url=s3_server), dataset, "team/ds/v1")
    return f"s3://{s3_bucket}/team/ds/v1/"


def _size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def test_fingerprint_is_the_same_locally_and_in_s3(dataset: Path, s3_dataset: str) -> None:
    local = fingerprint(dataset)
    assert len(local) == 64 and int(local, 16) >= 0
    assert fingerprint(s3_dataset) == local
    assert fingerprint(s3_dataset.rstrip("/")) == local
    assert fingerprint(f"file://{dataset}") == local


def test_fingerprint_follows_content_not_location(dataset: Path, tmp_path: Path) -> None:
    before = fingerprint(dataset)
    moved = dataset.rename(tmp_path / "elsewhere")
    assert fingerprint(moved) == before
    label = moved / "train" / "labels" / "train_00000.txt"
    label.write_text(label.read_text().replace("0.", "0.0", 1))
    assert fingerprint(moved) != before
    label.rename(label.with_name("renamed.txt"))
    assert len({before, fingerprint(moved)}) == 2


def test_objects_without_sha256_metadata_fall_back_to_etags(
    dataset: Path, s3_bucket: str, s3_server: str
) -> None:
    client = boto3.client("s3", endpoint_url=s3_server)
    for path in dataset.rglob("*"):
        if path.is_file():  # uploaded by a tool that records no sha256
            client.put_object(Bucket=s3_bucket, Key=f"raw/{path.relative_to(dataset)}",
                              Body=path.read_bytes())
    uri = f"s3://{s3_bucket}/raw"
    assert fingerprint(uri) == fingerprint(uri)  # stable …
    assert fingerprint(uri) != fingerprint(dataset)  # … but not comparable with a local copy
    result = sync(uri, dataset.parent / "cache")
    assert validate(result.path).ok


def test_sync_downloads_everything_once_then_nothing(s3_dataset: str, dataset: Path,
                                                     tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = sync(s3_dataset, cache)
    assert first.path == cache / first.fingerprint
    assert first.fingerprint == fingerprint(dataset)
    assert first.files_downloaded == first.files_total == sum(
        1 for p in dataset.rglob("*") if p.is_file())
    assert first.bytes_downloaded == _size(dataset)
    assert fingerprint(first.path) == first.fingerprint
    assert validate(first.path).ok
    second = sync(s3_dataset, cache)
    assert (second.bytes_downloaded, second.files_downloaded) == (0, 0)
    assert second.path == first.path
    assert sorted(os.listdir(cache / ".staging")) == []


def test_sync_resumes_an_interrupted_sync(s3_dataset: str, dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fp = fingerprint(dataset)
    staged = cache / ".staging" / fp
    done = sorted(p for p in dataset.rglob("*") if p.is_file())[:5]
    for path in done:  # what a killed sync left behind: whole files, never partial ones
        dest = staged / path.relative_to(dataset)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(path.read_bytes())
    assert not (cache / fp).exists()  # a staging dir is never mistaken for the cache entry
    result = sync(s3_dataset, cache)
    assert result.files_downloaded == result.files_total - 5
    assert result.bytes_downloaded == _size(dataset) - sum(p.stat().st_size for p in done)
    assert fingerprint(result.path) == fp


def test_a_new_version_downloads_only_what_changed(
    s3_dataset: str, dataset: Path, tmp_path: Path, s3_bucket: str, s3_server: str
) -> None:
    cache = tmp_path / "cache"
    v1 = sync(s3_dataset, cache)
    label = dataset / "train" / "labels" / "train_00002.txt"
    label.write_text(label.read_text() + "1 0.5 0.5 0.1 0.1\n")
    store = S3Store(s3_bucket, endpoint_url=s3_server)
    upload_tree(store, dataset, "team/ds/v2")
    v2 = sync(f"s3://{s3_bucket}/team/ds/v2", cache)
    assert v2.fingerprint != v1.fingerprint
    assert (v2.files_downloaded, v2.files_reused) == (1, v2.files_total - 1)
    assert v2.bytes_downloaded == label.stat().st_size
    assert (v2.path / "train/labels/train_00002.txt").read_text() == label.read_text()
    assert v1.path.is_dir() and fingerprint(v1.path) == v1.fingerprint


def test_a_corrupt_download_never_becomes_a_cache_entry(
    dataset: Path, tmp_path: Path, s3_bucket: str, s3_server: str
) -> None:
    upload_tree(S3Store(s3_bucket, endpoint_url=s3_server), dataset, "ds")
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket=s3_bucket, Key="ds/train/labels/train_00000.txt", Body=b"0 0.5 0.5 0.2 0.2\n",
        Metadata={"sha256": "0" * 64})  # metadata that does not match the content
    cache = tmp_path / "cache"
    with pytest.raises(DatasetIntegrityError, match="train_00000.txt"):
        sync(f"s3://{s3_bucket}/ds", cache)
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == []


def test_concurrent_syncs_download_once(s3_dataset: str, dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    go = tmp_path / "go"
    script = (
        "import json, pathlib, sys, time\n"
        "from trainforge.datasets import sync\n"
        f"go = pathlib.Path({str(go)!r})\n"
        "while not go.exists(): time.sleep(0.01)\n"
        f"r = sync({s3_dataset!r}, pathlib.Path({str(cache)!r}))\n"
        "print(json.dumps([str(r.path), r.files_downloaded, r.bytes_downloaded]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results: list[SyncResult] = []
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            while not go.exists():
                threading.Event().wait(0.01)
            results.append(sync(s3_dataset, cache))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=in_thread) for _ in range(3)]
    for t in threads:
        t.start()
    go.touch()
    for t in threads:
        t.join(120)
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert not errors and all(p.returncode == 0 for p in procs)
    paths = {str(r.path) for r in results} | {o[0] for o in outputs}
    assert len(paths) == 1
    downloads = [r.files_downloaded for r in results] + [o[1] for o in outputs]
    total = results[0].files_total
    assert sum(downloads) == total, downloads  # each file fetched exactly once, in all
    assert sum(r.bytes_downloaded for r in results) + sum(o[2] for o in outputs) == _size(dataset)
    assert fingerprint(Path(paths.pop())) == fingerprint(dataset)
    assert os.listdir(cache / ".staging") == []


def test_sync_from_a_local_directory(dataset: Path, tmp_path: Path) -> None:
    result = sync(dataset, tmp_path / "cache")
    assert result.bytes_downloaded == _size(dataset)
    assert fingerprint(result.path) == fingerprint(dataset) == result.fingerprint
    assert sync(f"file://{dataset}", tmp_path / "cache").bytes_downloaded == 0


def test_missing_sources_are_reported(tmp_path: Path, s3_bucket: str) -> None:
    with pytest.raises(DatasetNotFound):
        sync(tmp_path / "nope", tmp_path / "cache")
    with pytest.raises(DatasetNotFound, match="no objects"):
        fingerprint(f"s3://{s3_bucket}/nothing/here")
