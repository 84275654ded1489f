"""The dataset toolkit: synthesise, validate, split, fingerprint and cache YOLO datasets.

The public surface is re-exported here; modules starting with ``_`` are private.
"""

from trainforge.datasets._source import check_local_root
from trainforge.datasets.config import DataConfig, load_data_yaml, write_local_data_yaml
from trainforge.datasets.fingerprint import fingerprint
from trainforge.datasets.preview import preview
from trainforge.datasets.report import PROBLEM_CODES, Problem, ValidationReport
from trainforge.datasets.split import SplitResult, split_dataset
from trainforge.datasets.stats import DatasetStats, dataset_stats
from trainforge.datasets.sync import SyncResult, sync
from trainforge.datasets.synth import synth
from trainforge.datasets.validate import validate

__all__ = [
    "PROBLEM_CODES",
    "DataConfig",
    "DatasetStats",
    "Problem",
    "SplitResult",
    "SyncResult",
    "ValidationReport",
    "check_local_root",
    "dataset_stats",
    "fingerprint",
    "load_data_yaml",
    "preview",
    "split_dataset",
    "sync",
    "synth",
    "validate",
    "write_local_data_yaml",
]
