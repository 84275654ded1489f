"""Submit-time checks of what a job will read, made only where the server sees what it sees.

On the embedded server (``trainforge serve``, ``TRAINFORGE_EMBEDDED=true``) the API, the
dispatcher and the jobs (the local backend) share one machine: its files, its weights cache and
its network. There a submission can be refused for what its job would refuse seconds after
launch, in the job's own words (the dataset door in trainforge/datasets/_source.py, the weights
forms and messages in trainforge/weights.py):

- a local ``dataset.uri`` that does not exist, that names a file (``…/data.yaml`` instead of
  its folder), or a folder without a data.yaml;
- a local ``model.base`` (``/abs/best.pt``, ``file://…``) that is not a file;
- a stock ``model.base`` (``yolov8n.pt``) on an offline server (``YOLO_OFFLINE=1``) when it is
  not in the weights cache.

In production the server cannot see a job's machine (KubeRay pods, a Ray cluster): local paths
are refused there anyway (trainforge/access.py), ``s3://`` and ``registry://`` locations are
read by the job, and whether a cluster can download stock weights is the cluster's business,
so none of these checks apply and the job reports what it finds.

Run only after the access check: a team learns nothing about a location it may not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainforge import weights
from trainforge.datasets import check_local_root
from trainforge.datasets.config import find_yaml
from trainforge.errors import DatasetError, DatasetNotFound

__all__ = ["LocalMachine", "check_local_dataset"]


def check_local_dataset(uri: str) -> None:
    """Refuse a local ``dataset.uri`` a job could not open; s3:// URIs pass unchecked.

    Raises:
        DatasetNotFound: nothing there, or a file (data.yaml itself) instead of its folder.
        DatasetError: the folder has no data.yaml at its root (or more than one).
    """
    if uri.startswith("s3://"):
        return
    path = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
    try:
        root = check_local_root(path)
    except DatasetNotFound as exc:
        raise DatasetNotFound(f"dataset.uri: {exc.message}") from None
    name, problems = find_yaml(lambda n: (root / n).is_file())
    if name is None:
        raise DatasetError(f"dataset.uri: {uri}: {problems[0].message}")


@dataclass(frozen=True)
class LocalMachine:
    """The embedded server's view of the machine its jobs run on.

    Attributes:
        weights_cache: where jobs look up stock weights by name (TRAINFORGE_WEIGHTS_CACHE).
        offline: ``YOLO_OFFLINE`` is set: nothing can be downloaded.
    """

    weights_cache: Path
    offline: bool

    def check(self, dataset_uri: str, model_base: str) -> None:
        """Refuse what a job on this machine would fail on at once (module docstring).

        Raises:
            DatasetNotFound, DatasetError: see :func:`check_local_dataset`.
            WeightsError: a local base that is not a file, or a stock name that is neither
                cached nor downloadable.
        """
        check_local_dataset(dataset_uri)
        self.check_weights(model_base)

    def check_weights(self, base: str) -> None:
        """The ``model.base`` half of :meth:`check`.

        Raises:
            WeightsError: see :meth:`check`.
        """
        local = weights.local_weights_path(base)
        if local is not None:
            if not local.is_file():
                raise weights.cannot_fetch(base, f"no file at {local}")
            return
        if (weights.is_stock_weights(base) and self.offline
                and weights.find_in_cache(base, self.weights_cache) is None):
            raise weights.stock_unavailable(
                base, self.weights_cache,
                "this server is offline (YOLO_OFFLINE=1), so they cannot be downloaded")
