"""What every process of a sweep needs on its node, prepared once per node and shared.

Trials run concurrently on the same node; the dataset cache (keyed by fingerprint, locked
by :func:`trainforge.datasets.sync`) and the base weights are shared by all of them, so a
sweep of N trials downloads each at most once per node.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from jobs.core import dataset_step
from jobs.core.weights import resolve_weights
from trainforge.errors import DatasetError
from trainforge.filelock import file_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeDataset:
    """A dataset version on this node and what getting it cost."""

    path: Path
    bytes_downloaded: int
    cached: bool  # found complete in the node's cache: nothing listed, nothing fetched


def node_dataset(uri: str, cache_dir: Path, fingerprint: str) -> NodeDataset:
    """The dataset version the sweep validated, from this node's cache.

    A cache entry named by its fingerprint is complete by construction, so a node that has
    it does not even list the source; otherwise :func:`dataset_step.sync` fetches it (one
    process per node at a time; the others wait and then find it there).

    Raises:
        DatasetError: the source changed since the sweep started (another fingerprint).
    """
    cached = Path(cache_dir).resolve() / fingerprint
    if cached.is_dir():
        return NodeDataset(cached, 0, True)
    result = dataset_step.sync(uri, Path(cache_dir))
    if result.fingerprint != fingerprint:
        raise DatasetError(f"{uri} changed while the sweep ran (fingerprint {result.fingerprint} "
                           f"!= {fingerprint}); publish a new dataset version under a new "
                           "prefix instead")
    return NodeDataset(result.path, result.bytes_downloaded, False)


def node_weights(base: str, work_dir: Path, *, models_uri: str) -> str:
    """The base weights in ``work_dir/weights`` (fetched by the first trial on the node)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    # A trial that found the file half-written by another would load a broken checkpoint.
    with file_lock(work_dir / "weights.lock"):
        return resolve_weights(base, work_dir / "weights", models_uri=models_uri)

