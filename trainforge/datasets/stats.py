"""Dataset statistics: instances per class per split, image and box sizes (no decoding)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge.datasets.report import SizeSummary, SplitSummary
from trainforge.datasets.validate import validate
from trainforge.errors import DatasetError


@dataclass(frozen=True)
class DatasetStats:
    """What :func:`dataset_stats` measured."""

    uri: str
    names: list[str]
    splits: dict[str, SplitSummary]
    instances: dict[str, dict[str, int]]
    sizes: SizeSummary

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "names": list(self.names),
            "splits": {k: v.to_dict() for k, v in self.splits.items()},
            "instances": {k: dict(v) for k, v in self.instances.items()},
            "sizes": self.sizes.to_dict(),
        }


def dataset_stats(uri_or_path: str | Path) -> DatasetStats:
    """Count images, boxes per class and split, and summarise image/box sizes.

    Reads labels and image headers only (like ``validate(..., decode=False)``); invalid label
    lines are not counted.

    Args:
        uri_or_path: the dataset root (local path, ``file://`` or ``s3://``).

    Returns:
        The statistics.

    Raises:
        DatasetNotFound: nothing at the URI.
        DatasetError: data.yaml is missing or unusable (no split could be read).
    """
    report = validate(uri_or_path, decode=False)
    if not report.splits:
        errors = "\n".join(p.format() for p in report.errors)
        raise DatasetError(f"cannot compute statistics of {report.uri}:\n{errors}")
    return DatasetStats(report.uri, report.names, report.splits, report.instances,
                        report.sizes)
