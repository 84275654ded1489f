"""Every job's one door to its dataset: sync, validate, a local data.yaml, and reading it back.

Built on :mod:`trainforge.datasets` (the same parser that validates a dataset at submit time),
so a job never reads a data.yaml any other way: the train, sweep and export jobs sync into the
team's node cache by fingerprint, validate strictly (jobs/core/runtime.py ``prepare_job``), and
read class names, splits and images through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from trainforge import safeyaml
from trainforge.datasets import (
    SyncResult,
    ValidationReport,
    load_data_yaml,
    sync,
    validate,
    write_local_data_yaml,
)
from trainforge.datasets.config import DataConfig
from trainforge.datasets.images import IMAGE_EXTENSIONS
from trainforge.errors import DatasetError

__all__ = ["LocalDataset", "SyncResult", "ValidationReport", "class_names", "describe",
           "first_image", "has_split", "sync", "validate", "write_local_data_yaml"]


@dataclass(frozen=True)
class LocalDataset:
    """A dataset on local disk and the local data.yaml that points at it."""

    root: Path
    data_yaml: Path
    names: dict[int, str]
    #: The split evaluations use: test when the dataset has one, else val.
    eval_split: str
    eval_dir: Path
    #: Images in the train split (INT8 calibration draws from it).
    train_images: int
    fingerprint: str | None = None


def _config(data_yaml: Path) -> DataConfig:
    """The dataset a local data.yaml (written by :func:`write_local_data_yaml`) points at.

    Raises:
        DatasetError: the file is not such a data.yaml, or the dataset's own is invalid.
    """
    try:
        doc = safeyaml.safe_load(Path(data_yaml).read_bytes(), what=str(data_yaml))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise DatasetError(f"{data_yaml}: cannot read a data.yaml: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("path"), str):
        raise DatasetError(f"{data_yaml}: not a local data.yaml (no absolute path:)")
    return load_data_yaml(Path(doc["path"]))


def class_names(data_yaml: Path) -> list[str]:
    """Class names, in id order."""
    return list(_config(data_yaml).names)


def has_split(data_yaml: Path, split: str) -> bool:
    """Whether the dataset has ``split`` (e.g. "test")."""
    return split in _config(data_yaml).splits


def describe(data_yaml: Path, *, fingerprint: str | None = None) -> LocalDataset:
    """Class names, the evaluation split and the train image count of a local data.yaml.

    Raises:
        DatasetError: the train or evaluation split has no images.
    """
    config = _config(data_yaml)
    eval_split = "test" if "test" in config.splits else "val"
    for split in ("train", eval_split):
        if not _images(config.splits[split]):
            raise DatasetError(f"{data_yaml}: split {split!r} ({config.splits[split]}) has no "
                               "images")
    return LocalDataset(
        root=config.root, data_yaml=Path(data_yaml), names=dict(enumerate(config.names)),
        eval_split=eval_split, eval_dir=config.splits[eval_split],
        train_images=len(_images(config.splits["train"])), fingerprint=fingerprint,
    )


def first_image(dataset: LocalDataset) -> Path:
    """An image of the evaluation split (the latency input)."""
    return _images(dataset.eval_dir)[0]


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
