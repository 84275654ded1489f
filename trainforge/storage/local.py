"""A directory tree as an object store (the embedded default)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from trainforge.errors import ObjectNotFound, StorageError
from trainforge.storage.base import ObjectInfo, sha256_file


class LocalStore:
    """Objects are files under ``root``; writes are atomic (temp file + rename).

    ETags are the sha256 of the content, so fingerprints computed over a local copy and over
    the same files in S3 differ only where S3 uses MD5 ETags.
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

    def _info(self, key: str, path: Path) -> ObjectInfo:
        stat = path.stat()
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
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {self.uri(key)}") from None

    def open_read(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {self.uri(key)}") from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of a file (fewer at its end)."""
        if start < 0 or length < 1:
            raise StorageError(f"bad byte range start={start} length={length}")
        with self.open_read(key) as fh:
            fh.seek(start)
            return fh.read(length)

    def download(self, key: str, dest: Path) -> ObjectInfo:
        src = self._path(key)
        if not src.is_file():
            raise ObjectNotFound(f"no object {self.uri(key)}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return self._info(key, dest)

    def _write_atomic(self, key: str, write: object) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(write, bytes):
                    fh.write(write)
                else:
                    assert isinstance(write, Path)
                    with write.open("rb") as src:
                        shutil.copyfileobj(src, fh, 1 << 20)
            os.replace(tmp, path)
        except BaseException:
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            # link() fails if the target exists: an atomic create-if-absent on POSIX.
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(f"no object {self.uri(key)}")
        return self._info(key, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the deepest directory the prefix names, then filter by the full prefix.
        base_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._path(base_key)
        if not base.is_dir():
            return
        found: list[tuple[str, Path]] = []
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
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
            except FileNotFoundError:  # deleted since the walk: a listing is not a snapshot
                continue
            yield info

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def presign(self, key: str, *, expires_s: int = 900) -> str:
        # A local file needs no signature; the API serves file:// artifacts itself.
        return self.uri(key)
