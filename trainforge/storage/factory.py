"""URI → store, with one cached client per (scheme, bucket)."""

from __future__ import annotations

import functools
import os

from trainforge.constants import ENV_S3_ENDPOINT_URL
from trainforge.storage.base import ObjectStore, parse_uri
from trainforge.storage.local import LocalStore
from trainforge.storage.s3 import S3Store


@functools.cache
def _store(scheme: str, bucket: str, endpoint_url: str | None) -> ObjectStore:
    if scheme == "s3":
        return S3Store(bucket, endpoint_url=endpoint_url)
    return LocalStore(bucket)


def store_for_uri(uri: str) -> ObjectStore:
    """The store that holds ``uri`` (the endpoint comes from TRAINFORGE_S3_ENDPOINT_URL)."""
    scheme, bucket, _ = parse_uri(uri)
    return _store(scheme, bucket, os.environ.get(ENV_S3_ENDPOINT_URL) or None)


def open_location(uri: str) -> tuple[ObjectStore, str]:
    """(store, key) for a URI; the key keeps a trailing slash if the URI had one."""
    _, _, key = parse_uri(uri)
    if uri.endswith("/") and key and not key.endswith("/"):
        key += "/"
    return store_for_uri(uri), key


def clear_store_cache() -> None:
    """Forget cached clients (tests that change the endpoint call this)."""
    _store.cache_clear()
