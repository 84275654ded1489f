"""A node-local dataset cache keyed by fingerprint: ``<cache>/<fingerprint>/`` is one version.

* Atomic: files land in ``<cache>/.staging/<fingerprint>/`` (each file itself written to a temp
  name and renamed); the directory is renamed to ``<cache>/<fingerprint>`` only when every file
  is there and verified. A directory under that name is therefore always complete.
* Incremental: a file already staged by an interrupted sync, or present with the same digest in
  another cached version, is not downloaded again.
* Safe across processes: one ``flock`` per fingerprint; a second process waits, then finds the
  version complete and downloads nothing.
* Files Ultralytics would unpickle or load instead of images (``*.cache``, ``*.npy``, …) are
  never copied (see :mod:`trainforge.datasets.fingerprint`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from trainforge.datasets._source import LocalSource, StoreSource, open_source
from trainforge.datasets.fingerprint import FileDigest, file_digests, fingerprint_of, sha256_file
from trainforge.errors import DatasetIntegrityError
from trainforge.filelock import file_lock

log = logging.getLogger(__name__)

_STAGING = ".staging"
_LOCKS = ".locks"
_MANIFESTS = ".manifests"


@dataclass(frozen=True)
class SyncResult:
    """Where a synced dataset version is, and what the sync had to fetch.

    Attributes:
        path: the local dataset root (``<cache>/<fingerprint>``).
        fingerprint: the version's fingerprint.
        bytes_downloaded: bytes fetched from the source by this call (0 when cached).
        files_downloaded: files fetched from the source by this call.
        files_total: files in the version.
        files_reused: files copied from another cached version instead of downloaded.
    """

    path: Path
    fingerprint: str
    bytes_downloaded: int
    files_downloaded: int
    files_total: int
    files_reused: int = 0


def sync(uri: str | Path, cache_dir: Path, *, workers: int = 16) -> SyncResult:
    """Copy a dataset into ``cache_dir/<fingerprint>/``, fetching only what is missing.

    Args:
        uri: the dataset root (``s3://``, ``file://`` or a local path).
        cache_dir: the cache root (created if missing).
        workers: parallel downloads.

    Returns:
        The synced version.

    Raises:
        DatasetNotFound: nothing at ``uri``.
        DatasetUnsafe: a file would land outside the cache directory.
        DatasetIntegrityError: a fetched file does not match its advertised checksum.
        StorageError: the object store could not be read.
    """
    started = time.perf_counter()
    source = open_source(uri)
    files = file_digests(source, workers=workers)
    fp = fingerprint_of(files)
    cache = Path(cache_dir).resolve()
    final = cache / fp
    if final.is_dir():
        log.info("dataset %s is cached at %s", source.uri, final)
        return SyncResult(final, fp, 0, 0, len(files))
    for sub in (_STAGING, _LOCKS, _MANIFESTS):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    with file_lock(cache / _LOCKS / f"{fp}.lock"):
        if final.is_dir():  # another process finished while we waited for the lock
            return SyncResult(final, fp, 0, 0, len(files))
        staging = cache / _STAGING / fp
        staging.mkdir(exist_ok=True)
        reusable = _reusable(cache)
        fetched = reused = 0
        nbytes = 0

        def place(f: FileDigest) -> tuple[int, int, int]:
            dest = staging / f.rel
            if dest.is_file() and dest.stat().st_size == f.size:
                return 0, 0, 0  # staged by an earlier, interrupted sync
            other = reusable.get(f.digest)
            if other is not None and other.is_file() and other.stat().st_size == f.size:
                _copy_atomic(other, dest)
                return 0, 0, 1
            _fetch(source, f, dest)
            return f.size, 1, 0

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync") as pool:
            for b, n, r in pool.map(place, files):
                nbytes += b
                fetched += n
                reused += r
        manifest = cache / _MANIFESTS / f"{fp}.json"
        manifest.write_text(json.dumps(
            {"uri": source.uri, "files": [[f.rel, f.size, f.digest] for f in files]}))
        os.rename(staging, final)  # the commit point: final/ now exists, complete
    log.info("synced %s to %s in %.1fs: %d file(s), %d byte(s) fetched, %d reused", source.uri,
             final, time.perf_counter() - started, fetched, nbytes, reused)
    return SyncResult(final, fp, nbytes, fetched, len(files), reused)



def _reusable(cache: Path) -> dict[str, Path]:
    """digest -> a file with that content in a complete cached version."""
    found: dict[str, Path] = {}
    for manifest in sorted((cache / _MANIFESTS).glob("*.json")):
        version = cache / manifest.stem
        if not version.is_dir():
            continue
        try:
            files = json.loads(manifest.read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for rel, _size, digest in files:
            found.setdefault(str(digest), version / str(rel))
    return found


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(source: LocalSource | StoreSource, f: FileDigest, dest: Path) -> None:
    if isinstance(source, LocalSource):
        _copy_atomic(source.path(f.rel), dest)
    else:
        source.store.download(source.key(f.rel), dest)
    _verify(f, dest)


def _verify(f: FileDigest, path: Path) -> None:
    kind, _, expected = f.digest.partition(":")
    size = path.stat().st_size
    # An ETag is not always the MD5 (multipart, SSE-KMS): only sha256 digests are recomputed.
    actual = sha256_file(path) if kind == "sha256" else expected
    if actual != expected or size != f.size:
        path.unlink(missing_ok=True)
        raise DatasetIntegrityError(
            f"{f.rel}: fetched {size} bytes ({kind} {actual}), but the source advertised "
            f"{f.size} bytes ({kind} {expected}): the object changed during the sync or its "
            "checksum metadata is wrong; re-upload it and sync again"
        )
