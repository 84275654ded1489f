"""The storage interface and URI helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from trainforge.errors import StorageError


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or a head returns about one object."""

    key: str
    size: int
    etag: str
    last_modified: datetime | None = None
    sha256: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    """One bucket (S3) or one directory tree (local). Keys use '/' separators."""

    #: The URI of key "" in this store, e.g. ``s3://bucket`` or ``file:///data``.
    root_uri: str

    def get(self, key: str) -> bytes:
        """Return an object's bytes. Raises ObjectNotFound."""
        ...

    def download(self, key: str, dest: Path) -> ObjectInfo:
        """Copy an object to a local file (atomically: a partial file is never left)."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """A streaming reader (caller closes it)."""
        ...

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Write an object, replacing any existing one; records its sha256."""
        ...

    def upload(self, src: Path, key: str, *, content_type: str | None = None) -> ObjectInfo:
        """Upload a local file (multipart and parallel for large files)."""
        ...

    def put_if_absent(self, key: str, data: bytes, *, content_type: str | None = None) -> bool:
        """Create an object only if no object has that key. True if this call created it."""
        ...

    def copy(self, src_key: str, dest_key: str) -> ObjectInfo:
        """Copy an object inside the store (server-side on S3: no bytes pass through this
        process), replacing any object at ``dest_key``; the copy keeps the recorded sha256.
        Raises ObjectNotFound when there is nothing at ``src_key``."""
        ...

    def head(self, key: str) -> ObjectInfo:
        """Metadata of one object. Raises ObjectNotFound."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing object is not an error."""
        ...

    def presign(self, key: str, *, expires_s: int = 900) -> str:
        """A URL that reads the object without credentials until it expires."""
        ...

    def uri(self, key: str) -> str:
        """The full URI of a key in this store."""
        ...


def parse_uri(uri: str) -> tuple[str, str, str]:
    """Split a storage URI into (scheme, bucket-or-root, key).

    ``s3://bucket/a/b`` → ("s3", "bucket", "a/b"); ``file:///data/x`` and ``/data/x`` →
    ("file", "/", "data/x"). Relative local paths are made absolute.

    Raises:
        StorageError: for other schemes or an S3 URI without a bucket.
    """
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri!r} has no bucket; write s3://BUCKET/prefix")
        return "s3", parsed.netloc, parsed.path.lstrip("/")
    if uri.startswith("file://"):
        path = unquote(urlparse(uri).path)
        if not path.startswith("/"):
            raise StorageError(f"{uri!r}: file:// URIs need an absolute path (file:///abs/dir)")
        return "file", "/", path.lstrip("/")
    if "://" in uri:
        raise StorageError(f"unsupported storage URI {uri!r}; use s3://, file:// or a path")
    return "file", "/", str(Path(uri).resolve()).lstrip("/")


def join_key(*parts: str) -> str:
    """Join key parts with single slashes (a trailing slash on the last part is kept)."""
    cleaned = [p.strip("/") for p in parts if p and p.strip("/")]
    joined = "/".join(cleaned)
    if parts and parts[-1].endswith("/") and joined:
        joined += "/"
    return joined


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
