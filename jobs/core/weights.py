"""Resolve a spec's ``model.base`` into a local file Ultralytics can load.

Forms: a model YAML (training from scratch; returned as is, Ultralytics builds it), a stock
Ultralytics name such as ``yolov8n.pt`` (from the weights cache, else downloaded by Ultralytics
where the network allows), an ``s3://`` or ``file://`` URI, or ``registry://name@version`` (a
model trainforge published). Which form a base is, the weights cache and the messages are
:mod:`trainforge.weights`'s, shared with the embedded server's submit-time check.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from trainforge import safeyaml
from trainforge import weights as forms
from trainforge.access import REGISTRY_SCHEME
from trainforge.errors import StorageError, WeightsError
from trainforge.registry import resolve
from trainforge.settings import get_common_settings
from trainforge.storage import open_location

log = logging.getLogger(__name__)


def resolve_weights(base: str, dest_dir: Path, *, models_uri: str,
                    weights_cache: Path | None = None) -> str:
    """Return a local path (or a YAML name) for ``base``.

    Args:
        base: the spec's ``model.base``.
        dest_dir: where downloaded weights go (kept across attempts of one job).
        models_uri: root of the job team's registry (trainforge.access.team_models_uri), for
            ``registry://`` references: a team resolves only its own models.
        weights_cache: where stock names are looked up before a download (default
            ``TRAINFORGE_WEIGHTS_CACHE``, else ``$TRAINFORGE_HOME/weights``).

    Returns:
        A path to a ``.pt`` file, or the model YAML name for training from scratch.

    Raises:
        WeightsError: with what to do (mirror the weights into the bucket, fix the URI…).
    """
    if forms.is_model_yaml(base):
        return base  # a built-in model YAML: Ultralytics builds it
    uri = base
    local = forms.local_weights_path(base)
    if base.startswith(REGISTRY_SCHEME):
        uri = resolve(base, models_uri, "best.pt")
    elif local is not None:
        uri = f"file://{local}"  # a local path (embedded mode): read like file://, never by name
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
            raise forms.cannot_fetch(base, exc.message) from None
        if dest.suffix in (".yaml", ".yml"):
            _check_model_yaml(dest, base)
        log.info("base weights %s -> %s", base, dest)
        return str(dest)
    cache = weights_cache or get_common_settings().resolved_weights_cache
    return _stock(base, dest_dir, cache)


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


def _stock(name: str, dest_dir: Path, cache: Path) -> str:
    """A stock name: this job's copy, else the weights cache's (copied, so that the job's
    checks and Ultralytics read a file of the job's own), else Ultralytics' download."""
    from jobs.core import adapter

    local = dest_dir / name
    if local.is_file():
        return str(local)
    cached = forms.find_in_cache(name, cache)
    if cached is not None:
        dest_dir.mkdir(parents=True, exist_ok=True)
        partial = dest_dir / f".{name}.partial"
        shutil.copyfile(cached, partial)
        partial.replace(local)
        log.info("base weights %s from the weights cache %s", name, cached)
        return str(local)
    try:
        path = adapter.download_stock(name)
    except WeightsError as exc:  # said below, in the words of the weights cache
        path = Path(name)
        log.debug("stock download failed: %s", exc.message)
    if not path.is_file():
        raise forms.stock_unavailable(
            name, cache, "could not be downloaded (no network from the cluster?)")
    return str(path)
