"""Resolve a spec's ``model.base`` into a local file Ultralytics can load.

Forms: a model YAML (training from scratch; returned as is, Ultralytics builds it), a stock
Ultralytics name such as ``yolov8n.pt`` (downloaded by Ultralytics where the network allows),
an ``s3://`` or ``file://`` URI, or ``registry://name@version`` (a model trainforge published).
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from trainforge import safeyaml
from trainforge.access import REGISTRY_SCHEME
from trainforge.errors import StorageError, WeightsError
from trainforge.registry import resolve
from trainforge.storage import open_location

log = logging.getLogger(__name__)


def resolve_weights(base: str, dest_dir: Path, *, models_uri: str) -> str:
    """Return a local path (or a YAML name) for ``base``.

    Args:
        base: the spec's ``model.base``.
        dest_dir: where downloaded weights go (kept across attempts of one job).
        models_uri: root of the job team's registry (trainforge.access.team_models_uri), for
            ``registry://`` references: a team resolves only its own models.

    Returns:
        A path to a ``.pt`` file, or the model YAML name for training from scratch.

    Raises:
        WeightsError: with what to do (mirror the weights into the bucket, fix the URI…).
    """
    if base.endswith((".yaml", ".yml")) and "://" not in base and "/" not in base:
        return base  # a built-in model YAML: Ultralytics builds it
    uri = base
    if base.startswith(REGISTRY_SCHEME):
        uri = resolve(base, models_uri, "best.pt")
    elif base.startswith("/"):
        uri = "file://" + base  # a local path (embedded mode): read like file://, never by name
    if uri.startswith(("s3://", "file://")):
        dest = dest_dir / Path(uri.rstrip("/")).name
        if dest.is_file():
            return str(dest)
        store, key = open_location(uri)
        try:
            if dest.suffix in (".yaml", ".yml") and store.head(key).size > safeyaml.MAX_BYTES:
                raise WeightsError(f"model YAML {base} is larger than {safeyaml.MAX_BYTES} "
                                   "bytes; a model definition is a few kilobytes")
            store.download(key, dest)
        except StorageError as exc:
            raise WeightsError(f"cannot fetch base weights {base}: {exc.message}") from None
        if dest.suffix in (".yaml", ".yml"):
            _check_model_yaml(dest, base)
        log.info("base weights %s -> %s", base, dest)
        return str(dest)
    return _stock(base, dest_dir)


def _check_model_yaml(path: Path, base: str) -> None:
    """Ultralytics parses a model YAML with its own loader: bound it first (size, depth,
    aliases), so a crafted file cannot exhaust the job's memory.

    Raises:
        WeightsError: the file is not bounded, valid YAML.
    """
    try:
        safeyaml.safe_load(path.read_bytes(), what=f"model YAML {base}")
    except yaml.YAMLError as exc:
        path.unlink(missing_ok=True)
        raise WeightsError(f"model YAML {base} cannot be used: {exc}") from None


def _stock(name: str, dest_dir: Path) -> str:
    from jobs.core import adapter

    local = dest_dir / name
    if local.is_file():
        return str(local)
    try:
        path = adapter.download_stock(name)
    except Exception as exc:  # Ultralytics raises bare Exceptions for network problems
        path = Path(name)
        log.debug("stock download failed: %s", exc)
    if not path.is_file():
        raise WeightsError(
            f"stock weights {name!r} could not be downloaded (no network from the cluster?): "
            f"mirror them into your bucket and set model.base to s3://<bucket>/…/{name}, "
            "or use registry://<model>@<version> for a model trainforge trained"
        )
    return str(path)
