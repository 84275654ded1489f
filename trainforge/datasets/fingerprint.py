"""The dataset fingerprint: a content hash that names one version of a dataset.

Definition (version ``trainforge-dataset-v1``): for every file under the dataset root except
the never-loaded kinds (``*.cache``, ``*.npy``, ``*.npz``, ``*.pkl``, ``*.pickle``), sorted by
relative POSIX path, one line ``<path>\\t<size>\\t<digest>\\n``; the fingerprint is the sha256 hex
of the version tag line followed by those lines.

``<digest>`` is ``sha256:<hex>`` of the content whenever it is known: always for local files
(hashed), and for objects whose ``x-amz-meta-sha256`` metadata is set (every upload through
trainforge's storage layer sets it). Other objects fall back to ``etag:<etag>``, which is stable
for the same objects but differs from a local copy's fingerprint. So: the same files give the
same fingerprint from a local directory and from S3 when they were uploaded by trainforge (or
with that metadata); a dataset uploaded by other tools still has a stable fingerprint in S3.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trainforge.datasets._source import (
    Entry,
    LocalSource,
    StoreSource,
    is_excluded,
    open_source,
)
from trainforge.errors import DatasetUnsafe

FINGERPRINT_VERSION = "trainforge-dataset-v1"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One file of a dataset version."""

    rel: str
    size: int
    digest: str  # "sha256:<hex>" or "etag:<etag>"


def fingerprint(uri_or_path: str | Path, *, workers: int = 16) -> str:
    """The content fingerprint of the dataset at a local path, ``file://`` or ``s3://`` URI.

    Args:
        uri_or_path: the dataset root.
        workers: threads hashing files / asking the object store for checksums.

    Returns:
        64 hex characters.

    Raises:
        DatasetNotFound: nothing at the URI.
        DatasetUnsafe: a symlink leaves the root or an object key has '..' segments.
        StorageError: the object store could not be read.
    """
    return fingerprint_of(file_digests(open_source(uri_or_path), workers=workers))


def fingerprint_of(files: Iterable[FileDigest]) -> str:
    """The fingerprint of a list of file digests (order does not matter)."""
    digest = hashlib.sha256(f"{FINGERPRINT_VERSION}\n".encode())
    for f in sorted(files, key=lambda f: f.rel):
        digest.update(f"{f.rel}\t{f.size}\t{f.digest}\n".encode())
    return digest.hexdigest()


def file_digests(source: LocalSource | StoreSource, *, workers: int = 16) -> list[FileDigest]:
    """Digest every fingerprinted file of a source (see the module docstring)."""
    listing = source.listing()
    if listing.escapes or listing.unsafe:
        bad = (listing.escapes + listing.unsafe)[:5]
        raise DatasetUnsafe(
            f"{source.uri} has files that resolve outside the dataset root ({', '.join(bad)}): "
            "replace symlinks with the files and rename keys with '..' or empty segments"
        )
    entries = [e for rel, e in sorted(listing.files.items()) if not is_excluded(rel)]

    def one(entry: Entry) -> FileDigest:
        if isinstance(source, LocalSource):
            return FileDigest(entry.rel, entry.size,
                              "sha256:" + sha256_file(source.path(entry.rel)))
        info = source.store.head(source.key(entry.rel))
        if info.sha256:
            return FileDigest(entry.rel, info.size, f"sha256:{info.sha256}")
        return FileDigest(entry.rel, info.size, f"etag:{info.etag}")

    if not entries:
        return []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fingerprint") as pool:
        return list(pool.map(one, entries))
