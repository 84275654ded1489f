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
import os
import threading
from collections import OrderedDict
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


def stat_signature(source: LocalSource) -> str:
    """A digest of what ``stat`` says about every fingerprinted file of a local tree: relative
    path, size, mtime and ctime (nanoseconds), inode and device, plus what the fingerprint
    refuses (symlinks leaving the root).

    Content cannot change without changing it: a write moves the file's mtime and ctime, a
    replacement (a rename over it) its inode; a user can set an old mtime back (``touch -d``),
    never the ctime, which the kernel sets to now on that very call. Nothing is read.
    """
    listing = source.listing()
    digest = hashlib.sha256(b"trainforge-stat-v1\n")
    for bad in sorted(listing.escapes + listing.unsafe):
        digest.update(f"!{bad}\n".encode())
    for rel, entry in sorted(listing.files.items()):
        if is_excluded(rel):
            continue
        try:
            st = os.stat(entry.path or source.path(rel))
        except OSError:  # gone since the listing: a change
            digest.update(f"?{rel}\n".encode())
            continue
        digest.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\t"
                      f"{st.st_ino}\t{st.st_dev}\n".encode())
    return digest.hexdigest()


class FingerprintCache:
    """:func:`fingerprint`, hashing a local tree again only when its :func:`stat_signature`
    changed since the last hash of that tree (``s3://`` sources are fingerprinted as always:
    one listing and one HEAD per object, no content read).

    A hash is remembered only if the tree's signature was the same before and after it, so a
    tree written to while it was hashed is hashed again next time. Thread-safe; at most
    ``max_entries`` trees are remembered (the least recently used go first).
    """

    def __init__(self, *, max_entries: int = 1024, workers: int = 16) -> None:
        self._max_entries = max_entries
        self._workers = workers
        self._known: OrderedDict[str, tuple[str, str]] = OrderedDict()  # root -> (sig, fp)
        self._lock = threading.Lock()
        self.hashed = 0  # trees hashed (not answered from memory): for logs and tests

    def fingerprint(self, uri_or_path: str | Path) -> str:
        """The fingerprint of the dataset at ``uri_or_path``, as :func:`fingerprint` gives it.

        Raises:
            DatasetNotFound, DatasetUnsafe, StorageError: as :func:`fingerprint`.
        """
        source = open_source(uri_or_path)
        if not isinstance(source, LocalSource):
            return fingerprint_of(file_digests(source, workers=self._workers))
        root = str(source.local_root)
        before = stat_signature(source)
        with self._lock:
            known = self._known.get(root)
            if known is not None and known[0] == before:
                self._known.move_to_end(root)
                return known[1]
        result = fingerprint_of(file_digests(source, workers=self._workers))
        with self._lock:
            self.hashed += 1
        if stat_signature(LocalSource(Path(root))) == before:  # a fresh listing
            with self._lock:
                self._known[root] = (before, result)
                self._known.move_to_end(root)
                while len(self._known) > self._max_entries:
                    self._known.popitem(last=False)
        return result
