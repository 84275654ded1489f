"""Where a dataset's files come from: a local directory or an object-store prefix.

Both list the files once (relative POSIX paths) and read them whole or by their first bytes,
so validation, fingerprinting and sync share one view of "the files of this dataset".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from trainforge.errors import DatasetNotFound

if TYPE_CHECKING:
    from trainforge.storage import ObjectStore

#: Files never read, fingerprinted or synced: Ultralytics would unpickle ``*.cache`` files and
#: load ``*.npy`` in place of images, so a planted one could run code or swap data.
EXCLUDED_SUFFIXES = frozenset({".cache", ".npy", ".npz", ".pkl", ".pickle"})
#: Symlinked directories are followed at most this deep (guards against fan-out).
_MAX_DEPTH = 32


def suffix(rel: str) -> str:
    """Lower-case extension of a relative path ('' for none or a dot-file), like pathlib's."""
    return os.path.splitext(rel)[1].lower()


def is_excluded(rel: str) -> bool:
    """True for files the toolkit never loads (label caches, pickles, numpy arrays)."""
    return suffix(rel) in EXCLUDED_SUFFIXES


@dataclass(frozen=True, slots=True)
class Entry:
    """One file: its path relative to the dataset root, size, and ETag (object stores)."""

    rel: str
    size: int
    etag: str | None = None
    path: str | None = None  # the local file (a str: Path objects cost more than the read)


@dataclass
class Listing:
    """Every file under a dataset root, plus what could not be listed safely."""

    files: dict[str, Entry] = field(default_factory=dict)
    escapes: list[str] = field(default_factory=list)  # symlinks pointing outside the root
    unsafe: list[str] = field(default_factory=list)  # object keys with '', '.' or '..' parts
    dirs: set[str] = field(default_factory=set)  # local directories (rel), for "exists"


@runtime_checkable
class _Ranged(Protocol):
    def get_range(self, key: str, start: int, length: int) -> bytes: ...


class Source(Protocol):
    uri: str
    local_root: Path | None

    def listing(self) -> Listing: ...

    def read(self, rel: str) -> bytes: ...

    def read_head(self, rel: str, n: int) -> bytes: ...


#: What a dataset's YAML is called at its root (the tutorial calls it dataset.yaml).
DATA_YAML_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


def check_local_root(root: Path) -> Path:
    """The door to a local dataset: ``root`` must be a directory (the folder with data.yaml).

    The job opens every local dataset through here, and the embedded server checks a
    submission's ``dataset.uri`` with it, so both refuse a wrong path in the same words.

    Args:
        root: the dataset root as the user named it.

    Returns:
        ``root``, resolved.

    Raises:
        DatasetNotFound: nothing is there, or a file (data.yaml itself, most often).
    """
    if root.is_dir():
        return root.resolve()
    if root.name in DATA_YAML_NAMES or root.suffix in (".yaml", ".yml"):
        raise DatasetNotFound(
            f"{root} is a file: pass the folder, not {root.name} (file://{root.parent}/)")
    what = "is not a directory" if root.exists() else "does not exist"
    raise DatasetNotFound(f"{root} {what}: pass the dataset root (the folder with data.yaml)")


class LocalSource:
    """A directory tree. Symlinks inside the root are followed; ones leaving it are reported."""

    def __init__(self, root: Path, uri: str | None = None) -> None:
        self.local_root = check_local_root(root)
        self.uri = uri or str(self.local_root)
        self._listing: Listing | None = None

    def listing(self) -> Listing:
        if self._listing is None:
            self._listing = _walk(self.local_root)
        return self._listing

    def path(self, rel: str) -> Path:
        return Path(self.file(rel))

    def file(self, rel: str) -> str:
        """The local file behind ``rel`` (a symlink inside the root is resolved)."""
        entry = self.listing().files.get(rel)
        return entry.path if entry and entry.path else os.path.join(self.local_root, rel)

    def read(self, rel: str) -> bytes:
        with open(self.file(rel), "rb") as fh:
            return fh.read()

    def read_head(self, rel: str, n: int) -> bytes:
        with open(self.file(rel), "rb") as fh:
            return fh.read(n)


class StoreSource:
    """Every object under a key prefix of an object store (S3 or a LocalStore)."""

    def __init__(self, store: ObjectStore, prefix: str, uri: str) -> None:
        self.store = store
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.uri = uri
        self.local_root: Path | None = None
        self._listing: Listing | None = None

    def listing(self) -> Listing:
        if self._listing is None:
            listing = Listing()
            for info in self.store.list(self.prefix):
                rel = info.key[len(self.prefix):]
                if not rel or rel.endswith("/"):
                    continue  # "folder" marker objects written by consoles
                parts = rel.split("/")
                if any(p in {"", ".", ".."} for p in parts) or "\\" in rel:
                    listing.unsafe.append(rel)
                    continue
                listing.files[rel] = Entry(rel, info.size, info.etag)
                for i in range(1, len(parts)):
                    listing.dirs.add("/".join(parts[:i]))
            if not listing.files and not listing.unsafe:
                raise DatasetNotFound(
                    f"no objects under {self.uri}: check the bucket and prefix (the folder "
                    "that holds data.yaml)"
                )
            self._listing = listing
        return self._listing

    def key(self, rel: str) -> str:
        return self.prefix + rel

    def read(self, rel: str) -> bytes:
        return self.store.get(self.key(rel))

    def read_head(self, rel: str, n: int) -> bytes:
        if isinstance(self.store, _Ranged):
            return self.store.get_range(self.key(rel), 0, n)
        with self.store.open_read(self.key(rel)) as fh:  # pragma: no cover - both stores range
            return fh.read(n)


def open_source(uri: str | Path) -> LocalSource | StoreSource:
    """The source for a local path, ``file://`` URI or ``s3://`` URI.

    Raises:
        DatasetNotFound: nothing at the URI.
        StorageError: an unsupported scheme or an unreachable store.
    """
    text = str(uri)
    if "://" not in text:
        # A plain path: no need to import the object-store clients (keeps the CLI quick).
        return LocalSource(Path(text), text)
    from trainforge.storage import open_location, parse_uri

    scheme, _, key = parse_uri(text)
    if scheme == "file":
        return LocalSource(Path("/" + key), text)
    store, prefix = open_location(text)
    return StoreSource(store, prefix, text)


def _walk(root: Path) -> Listing:
    listing = Listing()
    root_str = str(root)

    def inside(real: str) -> bool:
        return real == root_str or real.startswith(root_str + os.sep)

    def visit(directory: str, rel_dir: str, chain: tuple[str, ...]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                real = os.path.realpath(entry.path)
                if not inside(real):
                    listing.escapes.append(rel)
                    continue
                if os.path.isdir(real):
                    # Follow in-root directory links, but never into one of our ancestors.
                    if real not in chain and len(chain) < _MAX_DEPTH:
                        listing.dirs.add(rel)
                        visit(real, rel, (*chain, real))
                    continue
                if os.path.isfile(real):
                    listing.files[rel] = Entry(rel, os.stat(real).st_size, None, real)
                continue
            if entry.is_dir(follow_symlinks=False):
                listing.dirs.add(rel)
                visit(entry.path, rel, (*chain, os.path.realpath(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                listing.files[rel] = Entry(rel, entry.stat(follow_symlinks=False).st_size, None,
                                           entry.path)

    visit(root_str, "", (root_str,))
    return listing
