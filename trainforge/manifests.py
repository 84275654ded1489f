"""Published versions as the registry stores them: a version exists when its manifest does.

The reads that both the registry (trainforge/registry.py: publishing, resolving references)
and the aliases (trainforge/aliases.py: which version an alias or ``@latest`` means) need; it
imports neither of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from trainforge.errors import ModelNotFound, ObjectNotFound
from trainforge.layout import manifest_key
from trainforge.storage import ObjectStore, join_key, open_location

__all__ = ["find_manifest", "is_export", "latest_trained", "list_versions", "open_registry",
           "read_manifest", "read_manifest_at"]


def open_registry(models_uri: str) -> tuple[ObjectStore, str]:
    return open_location(models_uri.rstrip("/") + "/")


def read_manifest_at(store: ObjectStore, key: str) -> dict[str, Any] | None:
    """The manifest at ``key`` in ``store``, or None when there is none."""
    try:
        data: dict[str, Any] = json.loads(store.get(key))
    except ObjectNotFound:
        return None
    return data


def find_manifest(models_uri: str, name: str, version: str) -> dict[str, Any] | None:
    """A version's manifest, or None when that version is not published."""
    store, base = open_registry(models_uri)
    return read_manifest_at(store, join_key(base, manifest_key(name, version)))


def read_manifest(manifest_uri: str) -> dict[str, Any]:
    store, key = open_location(manifest_uri)
    manifest = read_manifest_at(store, key)
    if manifest is None:
        raise ModelNotFound(f"no manifest at {manifest_uri}")
    return manifest


def list_versions(models_uri: str, name: str) -> list[dict[str, Any]]:
    """Every published version of a model, oldest first."""
    store, base = open_registry(models_uri)
    manifests = []
    for info in store.list(join_key(base, name) + "/"):
        if info.key.endswith("/manifest.json"):
            manifest = read_manifest_at(store, info.key)
            if manifest is not None:
                manifests.append(manifest)
    return sorted(manifests, key=lambda m: str(m.get("created_at", "")))


def is_export(manifest: Mapping[str, Any]) -> bool:
    """Whether an export job published this version: another version's weights converted,
    with its formats' gates but no held-out evaluation of its own (``source.kind``)."""
    source = manifest.get("source")
    return isinstance(source, Mapping) and source.get("kind") == "export"


def latest_trained(manifests: list[dict[str, Any]]) -> str | None:
    """What ``@latest`` means: the newest version a train or sweep job published (one with
    held-out scores), never an export job's; None when there is none.

    Args:
        manifests: a model's versions, oldest first (as :func:`list_versions` returns them).
    """
    trained = [m for m in manifests if not is_export(m)]
    return str(trained[-1]["version"]) if trained else None
