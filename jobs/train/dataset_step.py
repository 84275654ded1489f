"""The training job's only door to the dataset toolkit: sync, validate, local data.yaml.

Everything else in ``jobs/train`` calls these three functions and reads the local data.yaml;
nothing else touches dataset files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainforge.errors import DatasetError
from trainforge.storage.base import parse_uri, sha256_file

__all__ = ["SyncResult", "ValidationReport", "class_names", "has_split", "sync", "validate",
           "write_local_data_yaml"]


def class_names(data_yaml: Path) -> list[str]:
    """Class names, in id order, from a data.yaml."""
    names = yaml.safe_load(data_yaml.read_text())["names"]
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in names]


def has_split(data_yaml: Path, split: str) -> bool:
    """Whether a data.yaml declares ``split`` (e.g. "test")."""
    return bool(yaml.safe_load(data_yaml.read_text()).get(split))


# TODO(merge): replace with trainforge.datasets -------------------------------------------------
# `from trainforge.datasets import SyncResult, ValidationReport, sync, validate,
#  write_local_data_yaml` replaces everything below. This stand-in handles local datasets only.


@dataclass(frozen=True)
class SyncResult:
    path: Path
    fingerprint: str
    bytes_downloaded: int
    files_downloaded: int
    files_total: int


@dataclass
class ValidationReport:
    problems: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "names": self.names, "problems": self.problems}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def sync(uri: str, cache_dir: Path) -> SyncResult:
    scheme, _, key = parse_uri(uri)
    if scheme != "file":
        raise DatasetError(f"{uri}: this build reads local datasets only")
    root = Path("/" + key)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".cache")
    if not files:
        raise DatasetError(f"{uri}: no files")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(root)}\0{sha256_file(path)}\0".encode())
    fingerprint = digest.hexdigest()[:32]
    dest = cache_dir / fingerprint
    if dest.is_dir():
        return SyncResult(dest, fingerprint, 0, 0, len(files))
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".staging-"))
    for path in files:
        (staging / path.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, staging / path.relative_to(root))
    try:
        os.rename(staging, dest)
    except OSError:  # another job finished the same version first
        shutil.rmtree(staging)
    return SyncResult(dest, fingerprint, sum(p.stat().st_size for p in files), len(files),
                      len(files))


def validate(path: Path, *, decode: bool = True) -> ValidationReport:
    from PIL import Image

    report = ValidationReport()
    doc = yaml.safe_load((path / "data.yaml").read_text())
    report.names = class_names(path / "data.yaml")
    for split in ("train", "val", "test"):
        if not doc.get(split):
            continue
        images = sorted((path / doc[split]).glob("*.*"))
        if not images:
            report.problems.append(f"{doc[split]}: no images")
        for image in images:
            label = Path(str(image.parent).replace("images", "labels")) / f"{image.stem}.txt"
            if decode:
                try:
                    Image.open(image).verify()
                except Exception as exc:  # PIL raises many types for broken files
                    report.problems.append(f"{image.relative_to(path)}: unreadable image: {exc}")
            lines = label.read_text().splitlines() if label.exists() else []
            for n, line in enumerate(lines, 1):
                parts = line.split()
                ok = len(parts) == 5 and parts[0].isdigit() and int(parts[0]) < len(report.names)
                ok = ok and all(_unit(v) for v in parts[1:])
                if not ok:
                    report.problems.append(f"{label.relative_to(path)}:{n}: bad label {line!r}")
    return report


def _unit(value: str) -> bool:
    try:
        return 0.0 <= float(value) <= 1.0
    except ValueError:
        return False


def write_local_data_yaml(root: Path, dest: Path) -> Path:
    doc = yaml.safe_load((root / "data.yaml").read_text())
    out = {"path": str(root), **{s: doc[s] for s in ("train", "val", "test") if doc.get(s)},
           "nc": len(class_names(root / "data.yaml")),
           "names": dict(enumerate(class_names(root / "data.yaml")))}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(out, sort_keys=False))
    return dest
