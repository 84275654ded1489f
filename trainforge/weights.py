"""What a spec's ``model.base`` names, and where a stock name is found without the network.

The job resolves ``model.base`` into a file (jobs/core/weights.py); the embedded server checks
at submission what the job would find on the same machine (trainforge/preflight.py). Both read
the forms, the weights cache and their messages from here, so a mistake refused at submit reads
exactly as the job's own failure would.

Forms of ``model.base``:

- a built-in model YAML (``yolov8n.yaml``): training from scratch, nothing to fetch;
- a stock Ultralytics name (``yolov8n.pt``): looked up in the weights cache
  (``TRAINFORGE_WEIGHTS_CACHE``, default ``$TRAINFORGE_HOME/weights``), else downloaded by
  Ultralytics where the network allows;
- an absolute local path or ``file://`` URI (embedded server only), an ``s3://`` URI, or
  ``registry://NAME@VERSION``.

Import-light on purpose (no Ultralytics, no torch): the API imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from trainforge.constants import ENV_YOLO_OFFLINE
from trainforge.errors import WeightsError

__all__ = [
    "cannot_fetch",
    "find_in_cache",
    "is_model_yaml",
    "is_stock_weights",
    "local_weights_path",
    "offline",
    "stock_unavailable",
]

_YAML_SUFFIXES = (".yaml", ".yml")


def _bare(base: str) -> bool:
    return "://" not in base and "/" not in base


def is_model_yaml(base: str) -> bool:
    """A built-in model YAML (``yolov8n.yaml``): Ultralytics builds it; nothing is fetched."""
    return _bare(base) and base.endswith(_YAML_SUFFIXES)


def is_stock_weights(base: str) -> bool:
    """A stock Ultralytics weights name (``yolov8n.pt``): the cache, else a download."""
    return _bare(base) and base.endswith(".pt")


def local_weights_path(base: str) -> Path | None:
    """The file an absolute local path or ``file://`` URI names; None for the other forms."""
    if base.startswith("file://"):
        return Path(base[len("file://"):])
    if base.startswith("/"):
        return Path(base)
    return None


def find_in_cache(name: str, cache_dir: Path) -> Path | None:
    """``cache_dir/name`` when it is a file (the operator put the stock weights there)."""
    path = Path(cache_dir) / name
    return path if path.is_file() else None


def offline(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``YOLO_OFFLINE`` (Ultralytics' own switch) says there is no network."""
    return environ.get(ENV_YOLO_OFFLINE, "").strip().lower() in {"1", "true", "yes", "on"}


def stock_unavailable(name: str, cache_dir: Path, why: str) -> WeightsError:
    """The refusal of a stock name that is neither cached nor downloadable, saying what to do.

    Args:
        name: the stock name (``yolov8n.pt``).
        cache_dir: the weights cache that was looked in.
        why: why it cannot be downloaded (offline, or the download failed).
    """
    scratch = name.removesuffix(".pt") + ".yaml"
    return WeightsError(
        f"model.base: stock weights {name!r} are not in the weights cache ({cache_dir}) and "
        f"{why}: use {scratch} to train from scratch, a local .pt (model.base: "
        f"/abs/path/{name}, embedded server), or put the weights in {Path(cache_dir) / name} "
        "(TRAINFORGE_WEIGHTS_CACHE); on a cluster, mirror them into your bucket and set "
        f"model.base to s3://<bucket>/…/{name}, or use registry://<model>@<version> for a "
        "model trainforge trained"
    )


def cannot_fetch(base: str, detail: str) -> WeightsError:
    """The refusal of a ``model.base`` location that cannot be read (missing file, store
    error), as the job words it."""
    return WeightsError(f"cannot fetch base weights {base}: {detail}")
