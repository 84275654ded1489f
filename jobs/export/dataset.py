"""The dataset an export evaluates and calibrates on, as a local folder and a data.yaml."""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainforge.errors import DatasetError
from trainforge.storage import open_location, parse_uri

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class LocalDataset:
    """A dataset on local disk and a data.yaml whose ``path`` is absolute."""

    root: Path
    data_yaml: Path
    names: dict[int, str]
    #: The split the gates evaluate on: test when the dataset has one, else val.
    eval_split: str
    #: Images in the train split (INT8 calibration draws from it).
    train_images: int
    fingerprint: str | None = None


def local_copy(uri: str, cache_dir: Path) -> tuple[Path, str | None]:
    """A local folder holding the dataset at ``uri`` (file:// and paths are used in place).

    Returns:
        (root, fingerprint or None when the sync does not report one).
    """
    scheme, _, key = parse_uri(uri)
    if scheme == "file":
        return Path("/" + key), None
    return _sync(uri, cache_dir)


def _sync(uri: str, cache_dir: Path) -> tuple[Path, str | None]:
    """Download an s3:// dataset into the node cache.

    ``trainforge.datasets.sync`` (content-addressed cache, shared with the training job) is
    used when present; the fallback below mirrors the prefix file by file.
    """
    sync = getattr(importlib.import_module("trainforge.datasets"), "sync", None)
    if sync is None:  # fallback until trainforge.datasets.sync(uri, cache_dir) is merged
        return _mirror(uri, cache_dir), None
    result: Any = sync(uri, cache_dir)
    if isinstance(result, str | os.PathLike):
        return Path(result), None
    root = getattr(result, "root", None) or getattr(result, "path", None)
    if root is None:
        raise DatasetError(f"trainforge.datasets.sync returned {type(result).__name__} "
                           "without a root/path")
    return Path(root), getattr(result, "fingerprint", None)


def _mirror(uri: str, cache_dir: Path) -> Path:
    store, prefix = open_location(uri.rstrip("/") + "/")
    dest = cache_dir / hashlib.sha256(uri.encode()).hexdigest()[:16]
    count = 0
    for info in store.list(prefix):
        target = dest / info.key[len(prefix):]
        if not (target.is_file() and target.stat().st_size == info.size):
            store.download(info.key, target)
        count += 1
    if count == 0:
        raise DatasetError(f"{uri} holds no files; expected data.yaml and images/labels")
    log.info("dataset %s mirrored to %s (%d files)", uri, dest, count)
    return dest


def prepare(root: Path, workdir: Path, *, fingerprint: str | None = None) -> LocalDataset:
    """Write ``workdir/data.yaml`` with an absolute ``path``, then :func:`describe` it.

    Raises:
        DatasetError: data.yaml is missing or not YAML, or :func:`describe` refuses it.
    """
    source = root / "data.yaml"
    if not source.is_file():
        raise DatasetError(f"{root} has no data.yaml at its root")
    data = _load(source)
    base = Path(data.get("path") or root)
    data["path"] = str((base if base.is_absolute() else root / base).resolve())
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "data.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return describe(out, fingerprint=fingerprint)


def describe(data_yaml: Path, *, fingerprint: str | None = None) -> LocalDataset:
    """Read a local data.yaml: class names, the evaluation split, the train image count.

    Raises:
        DatasetError: entries are missing, or the train or evaluation split has no images.
    """
    data = _load(data_yaml)
    if "train" not in data or "val" not in data:
        raise DatasetError(f"{data_yaml}: needs train: and val: entries")
    base = Path(data.get("path") or data_yaml.parent)
    base = base if base.is_absolute() else data_yaml.parent / base
    names = data.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{data_yaml}: names: must list the class names")
    eval_split = "test" if data.get("test") else "val"
    for split in ("train", eval_split):
        if not _images(base, data[split]):
            raise DatasetError(f"{data_yaml}: split {split!r} ({data[split]}) has no images")
    return LocalDataset(
        root=base, data_yaml=data_yaml, names={int(k): str(v) for k, v in names.items()},
        eval_split=eval_split, train_images=len(_images(base, data["train"])),
        fingerprint=fingerprint,
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path}: cannot read a data.yaml: {exc}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a data.yaml is a mapping")
    return data


def _images(base: Path, entry: Any) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    found: list[Path] = []
    for item in entries:
        path = Path(str(item))
        path = path if path.is_absolute() else base / path
        if path.is_dir():
            found += [p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES]
        elif path.is_file() and path.suffix == ".txt":
            found += [Path(line) for line in path.read_text().split() if line]
    return sorted(found)


def first_image(dataset: LocalDataset) -> Path:
    """An image of the evaluation split (the latency input)."""
    return _images(dataset.root, _load(dataset.data_yaml)[dataset.eval_split])[0]


def fingerprint(root: Path) -> str:
    """sha256 over every file's relative path and content (Ultralytics' ``*.cache`` excluded).

    Used when the dataset came from a local folder; a synced dataset carries its own.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".cache"):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()
