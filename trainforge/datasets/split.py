"""Split a flat ``images/`` + ``labels/`` folder into train/val/test, reproducibly.

The order of images and the shuffle are the tutorial's ``split_dataset`` (JPEGs sorted, then
PNGs sorted, then other formats; ``random.seed(seed); random.shuffle``), so the same seed gives
the same split as that script, but with a private RNG, images and labels moved together, a
data.yaml written, and nothing overwritten.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainforge import safeyaml
from trainforge.datasets.images import IMAGE_EXTENSIONS
from trainforge.errors import DatasetError, DatasetExists, DatasetNotFound

log = logging.getLogger(__name__)

_ORDER = (".jpg", ".png")  # the tutorial globs *.jpg, then *.png


@dataclass(frozen=True)
class SplitResult:
    """Where the split went and how many images each split got."""

    path: Path
    counts: dict[str, int]
    backgrounds: int = 0  # images copied without a label file
    orphan_labels: list[str] = field(default_factory=list)  # labels with no image (not copied)


def split_dataset(
    src: str | Path,
    dst: str | Path,
    *,
    train: float = 0.8,
    val: float = 0.1,
    seed: int = 42,
    names: list[str] | None = None,
) -> SplitResult:
    """Split ``src/images/*`` (+ ``src/labels/<stem>.txt``) into ``dst/{train,val,test}``.

    Args:
        src: a folder with ``images/`` and ``labels/``.
        dst: a missing or empty folder; written atomically (a temp sibling renamed at the end).
        train: fraction of images for train (0 < train < 1).
        val: fraction for val (0 < val, train + val <= 1); the rest is test.
        seed: the shuffle seed.
        names: class names for data.yaml; default: ``src/data.yaml`` names, else
            ``src/classes.txt`` or ``src/labels/classes.txt`` (one name per line).

    Returns:
        The counts per split.

    Raises:
        DatasetNotFound: ``src/images`` is missing.
        DatasetExists: ``dst`` exists and is not empty.
        DatasetError: bad fractions, too few images, or no class names found.
    """
    source, dest = Path(src), Path(dst)
    if not (0 < train < 1) or not (0 < val < 1) or train + val > 1 + 1e-9:
        raise DatasetError(
            f"--train {train} --val {val}: each must be in (0, 1) and their sum at most 1 "
            "(the rest is test)"
        )
    if not (source / "images").is_dir():
        raise DatasetNotFound(f"{source / 'images'} is not a folder: split expects "
                              "SRC/images/ and SRC/labels/")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetExists(f"{dest} exists and is not empty: split never overwrites; pick a "
                            "new destination")
    class_names = names or _find_names(source)
    images = _ordered_images(source / "images")
    n = len(images)
    random.Random(seed).shuffle(images)
    n_train, n_val = int(n * train), int(n * val)
    if n_train < 1 or n_val < 1:
        raise DatasetError(
            f"{n} images give {n_train} train and {n_val} val images: add images or raise "
            "the fractions (train and val need at least one image each)"
        )
    parts = {"train": images[:n_train], "val": images[n_train:n_train + n_val],
             "test": images[n_train + n_val:]}
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.split-"))
    backgrounds = 0
    try:
        for split, members in parts.items():
            if not members:
                continue
            (staging / split / "images").mkdir(parents=True)
            (staging / split / "labels").mkdir(parents=True)
            for image in members:
                shutil.copy2(image, staging / split / "images" / image.name)
                label = source / "labels" / f"{image.stem}.txt"
                if label.is_file():
                    shutil.copy2(label, staging / split / "labels" / label.name)
                else:
                    backgrounds += 1
        doc = {"train": "train/images", "val": "val/images",
               **({"test": "test/images"} if parts["test"] else {}),
               "nc": len(class_names), "names": dict(enumerate(class_names))}
        (staging / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False,
                                                          allow_unicode=True))
        if dest.exists():
            dest.rmdir()  # empty (checked above); rename needs it gone
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stems = {i.stem for i in images}
    orphans = sorted(p.name for p in (source / "labels").glob("*.txt")
                     if p.stem not in stems and p.name != "classes.txt") \
        if (source / "labels").is_dir() else []
    counts = {k: len(v) for k, v in parts.items()}
    log.info("split %s into %s: %s", source, dest, counts)
    return SplitResult(dest, counts, backgrounds, orphans)


def _ordered_images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    by_ext: dict[str, list[Path]] = {}
    for p in files:
        by_ext.setdefault(p.suffix, []).append(p)
    order = [e for e in _ORDER if e in by_ext] + sorted(e for e in by_ext if e not in _ORDER)
    return [p for ext in order for p in sorted(by_ext[ext])]


def _find_names(source: Path) -> list[str]:
    data = source / "data.yaml"
    if data.is_file():
        # The source folder's data.yaml is someone else's file: load it within limits.
        doc = safeyaml.safe_load(data.read_text(encoding="utf-8"), what=str(data))
        raw = doc.get("names") if isinstance(doc, dict) else None
        if isinstance(raw, dict):
            raw = [raw[k] for k in sorted(raw)]
        if isinstance(raw, list) and raw and all(isinstance(n, str) for n in raw):
            return list(raw)
    for candidate in (source / "classes.txt", source / "labels" / "classes.txt"):
        if candidate.is_file():
            names = [line.strip() for line in candidate.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
            if names:
                return names
    raise DatasetError(
        f"no class names for {source}: pass --names a,b,c (class-id order) or add "
        "classes.txt / data.yaml with names"
    )
