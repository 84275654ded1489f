"""The dataset an export evaluates and calibrates on, as a local folder and a data.yaml."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainforge import datasets
from trainforge.errors import DatasetError
from trainforge.storage import parse_uri

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


def local_copy(uri: str, cache_dir: Path) -> tuple[Path, str]:
    """A local folder holding the dataset at ``uri``, and the dataset's fingerprint.

    file:// URIs and paths are used in place; s3:// datasets are synced into the node cache
    (content-addressed, shared with the training job).
    """
    scheme, _, key = parse_uri(uri)
    if scheme == "file":
        root = Path("/" + key)
        return root, datasets.fingerprint(root)
    synced = datasets.sync(uri, cache_dir)
    log.info("dataset %s at %s (%d files downloaded)", uri, synced.path, synced.files_downloaded)
    return synced.path, synced.fingerprint


def prepare(root: Path, workdir: Path, *, fingerprint: str | None = None) -> LocalDataset:
    """Write ``workdir/data.yaml`` (absolute ``path``), then :func:`describe` it.

    Raises:
        DatasetError: the dataset's data.yaml is missing or invalid.
    """
    out = datasets.write_local_data_yaml(root, workdir / "data.yaml")
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
