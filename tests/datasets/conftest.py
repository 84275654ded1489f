"""Dataset fixtures: a small valid synthetic dataset, the broken corpus built from it, and a
bucket on the loopback S3 server holding copies of them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest

from tests.datasets.corpus import BASE_ARGS, CASES
from tests.fixtures.s3 import upload_tree
from trainforge.datasets import synth
from trainforge.storage import S3Store


@pytest.fixture(scope="session")
def base_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid 2-class dataset (6 train, 3 val, 2 test images of 32 px). Do not modify."""
    return synth(tmp_path_factory.mktemp("base") / "ds", **BASE_ARGS)


@pytest.fixture()
def dataset(base_dataset: Path, tmp_path: Path) -> Path:
    """A private, modifiable copy of the base dataset."""
    return Path(shutil.copytree(base_dataset, tmp_path / "ds", symlinks=True))


@pytest.fixture(scope="session")
def corpus(base_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """case id -> a copy of the base dataset with that case's mutation applied."""
    top = tmp_path_factory.mktemp("corpus")
    roots: dict[str, Path] = {}
    for case in CASES:
        # One parent per case: mutations may write beside the root ("outside" it).
        root = Path(shutil.copytree(base_dataset, top / case.id / "ds"))
        case.mutate(root)
        roots[case.id] = root
    return roots


@pytest.fixture(scope="session")
def s3_store_factory(s3_server: str) -> Iterator[Callable[[], S3Store]]:
    """Makes fresh buckets on the loopback S3 server (session-scoped fixtures can use it)."""
    import uuid

    client = boto3.client("s3", endpoint_url=s3_server)

    def make() -> S3Store:
        name = f"tf-ds-{uuid.uuid4().hex[:10]}"
        client.create_bucket(Bucket=name)
        return S3Store(name, endpoint_url=s3_server)

    yield make


@pytest.fixture(scope="session")
def s3_corpus(corpus: dict[str, Path], s3_store_factory: Callable[[], S3Store]) -> str:
    """A bucket holding every object-storage-expressible corpus case under <case id>/."""
    store = s3_store_factory()
    for case in CASES:
        if not case.local_only:
            upload_tree(store, corpus[case.id], case.id)
    return store.bucket
