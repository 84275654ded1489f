"""A directory tree as an object store (the embedded default)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat as stat_mode
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from trainforge.errors import ObjectNotFound, StorageAccessDenied, StorageError
from trainforge.storage.base import ObjectInfo, sha256_file

#: errno → what to tell an operator. Anything else is reported with the system's own text.
_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the file system is read-only",
    errno.EIO: "an I/O error",
    errno.EFBIG: "the file is larger than this process may write",
    errno.ENOTDIR: "a file stands where the store expects a directory",
    errno.EISDIR: "a directory stands where the store expects a file",
}


class LocalStore:
    """Objects are files under ``root``; writes are atomic (temp file + rename).

    ETags are the sha256 of the content, so fingerprints computed over a local copy and over
    the same files in S3 differ only where S3 uses MD5 ETags.

    Errors: a missing object (or a directory where an object would be) is
    :class:`ObjectNotFound`; a file system that cannot serve the store (full, read-only, I/O
    errors, a file where the store needs a directory) is :class:`StorageError`, and a
    permission error :class:`StorageAccessDenied`, exactly like an S3 store that is down, so
    callers never mistake a broken store for an empty one.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root_uri = f"file://{self.root}" if str(self.root) != "/" else "file://"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve() if key else self.root
        if path != self.root and self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the store root {self.root}")
        return path

    def uri(self, key: str) -> str:
        return f"file://{self._path(key)}" + ("/" if key.endswith("/") else "")

    def _failed(self, exc: OSError, action: str, key: str) -> StorageError:
        """The storage error for an OSError that is not a plain "no such object"."""
        where = self.uri(key)
        if isinstance(exc, PermissionError):
            return StorageAccessDenied(
                f"permission denied to {action} {where}: give the process's user access to "
                f"the store's directory"
            )
        cause = _CAUSES.get(exc.errno or 0) or exc.strerror or type(exc).__name__
        return StorageError(f"cannot {action} {where}: {cause}")

    def _read_failed(self, exc: OSError, key: str) -> StorageError:
        """ObjectNotFound for a missing object (or a directory at its key), else _failed."""
        if isinstance(exc, FileNotFoundError | IsADirectoryError):
            return ObjectNotFound(f"no object {self.uri(key)}")
        return self._failed(exc, "read", key)

    def _stat(self, key: str, path: Path) -> os.stat_result:
        """The stat of an object's file. Raises ObjectNotFound or a storage error."""
        try:
            result = path.stat()
        except OSError as exc:
            raise self._read_failed(exc, key) from None
        if not stat_mode.S_ISREG(result.st_mode):
            raise ObjectNotFound(f"no object {self.uri(key)}")
        return result

    def _info(self, key: str, path: Path, stat: os.stat_result | None = None) -> ObjectInfo:
        stat = stat or self._stat(key, path)
        return ObjectInfo(
            key=key,
            size=stat.st_size,
            etag=f"{stat.st_size:x}-{stat.st_mtime_ns:x}",
            last_modified=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except OSError as exc:
            raise self._read_failed(exc, key) from None

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except OSError as exc:
            raise self._read_failed(exc, key) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of a file (fewer at its end)."""
        if start < 0 or length < 1:
            raise StorageError(f"bad byte range start={start} length={length}")
        with self.open_read(key) as fh:
            try:
                fh.seek(start)
                return fh.read(length)
            except OSError as exc:
                raise self._failed(exc, "read", key) from None

    def download(self, key: str, dest: Path) -> ObjectInfo:
        src = self._path(key)
        self._stat(key, src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            if exc.filename == tmp or exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise  # the destination (the caller's disk) failed, not the store
            raise self._read_failed(exc, key) from None
        os.replace(tmp, dest)
        return self._info(key, dest)

    def _write_atomic(self, key: str, write: bytes | Path) -> Path:
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as fh:
                if isinstance(write, bytes):
                    fh.write(write)
                else:
                    with write.open("rb") as src:
                        shutil.copyfileobj(src, fh, 1 << 20)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if isinstance(write, Path) and exc.filename == str(write):
                raise  # the source file is unreadable: the caller's problem, not the store's
            # FileExistsError from mkdir: a file where a parent directory should be.
            if isinstance(exc, FileExistsError):
                exc = NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
            raise self._failed(exc, "write", key) from None
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        path = self._write_atomic(key, data)
        info = self._info(key, path)
        return ObjectInfo(info.key, info.size, info.etag, info.last_modified,
                          hashlib.sha256(data).hexdigest())

    def upload(self, src: Path, key: str, *, content_type: str | None = None) -> ObjectInfo:
        path = self._write_atomic(key, Path(src))
        info = self._info(key, path)
        return ObjectInfo(info.key, info.size, info.etag, info.last_modified, sha256_file(path))

    def put_if_absent(self, key: str, data: bytes, *, content_type: str | None = None) -> bool:
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # link() fails if the target exists: an atomic create-if-absent on POSIX.
            os.link(tmp, path)
            return True
        except FileExistsError:
            if tmp is None:  # from mkdir: a file where a parent directory should be
                raise self._failed(NotADirectoryError(errno.ENOTDIR, "not a directory"),
                                   "write", key) from None
            return False
        except OSError as exc:
            raise self._failed(exc, "write", key) from None
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    def copy(self, src_key: str, dest_key: str) -> ObjectInfo:
        src = self._path(src_key)
        self._stat(src_key, src)
        try:
            path = self._write_atomic(dest_key, src)
        except OSError as exc:  # the source vanished or became unreadable while copied
            raise self._read_failed(exc, src_key) from None
        info = self._info(dest_key, path)
        return ObjectInfo(info.key, info.size, info.etag, info.last_modified, sha256_file(path))

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        return self._info(key, path, self._stat(key, path))

    def exists(self, key: str) -> bool:
        try:
            self._stat(key, self._path(key))
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the deepest directory the prefix names, then filter by the full prefix.
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(base_key)
        try:
            mode = base.stat().st_mode
        except FileNotFoundError:
            return  # nothing was ever written under the prefix
        except OSError as exc:
            raise self._failed(exc, "list", base_key) from None
        if not stat_mode.S_ISDIR(mode):
            # A file where the prefix names a directory: the store's layout is broken (a
            # LocalStore cannot hold both "a" and "a/b"), not an empty listing.
            raise self._failed(NotADirectoryError(errno.ENOTDIR, "not a directory"), "list",
                               base_key)

        def walk_error(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):  # deleted during the walk: skip it
                raise self._failed(exc, "list", base_key) from None

        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(base, onerror=walk_error, followlinks=False):
            dirnames.sort()
            for name in filenames:
                # Writes go through ".<name>.<random>" temp files (mkstemp): never objects.
                if name.startswith("."):
                    continue
                full = Path(dirpath, name)
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not full.is_symlink():
                    found.append((key, full))
        for key, full in sorted(found):
            try:
                info = self._info(key, full)
            except ObjectNotFound:  # deleted since the walk: a listing is not a snapshot
                continue
            yield info

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._failed(exc, "delete", key) from None

    def presign(self, key: str, *, expires_s: int = 900) -> str:
        # A local file needs no signature; the API serves file:// artifacts itself.
        return self.uri(key)
