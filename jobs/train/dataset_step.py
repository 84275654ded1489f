"""The training job's only door to the dataset toolkit: sync, validate, local data.yaml.

Everything else in ``jobs/train`` calls these three functions and reads the local data.yaml;
nothing else touches dataset files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from trainforge.datasets import SyncResult, ValidationReport, sync, validate, write_local_data_yaml

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
