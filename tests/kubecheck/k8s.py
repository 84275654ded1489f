"""Validate core Kubernetes objects against the API schemas bundled in kubernetes-validate.

kubernetes-validate ships the OpenAPI schemas of every Kubernetes minor release (strict
variants refuse unknown fields) and works offline; its own ``validate()`` re-reads them per call,
so this caches one validator per (version, kind) and uses the same files.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate.utils as kv
from referencing import Registry, Resource

MIN_VERSION = (1, 30)


def versions() -> list[str]:
    """Every bundled Kubernetes release from 1.30 on (e.g. ['1.30.0', …, '1.37.0'])."""
    found = [v for v in kv.all_versions() if tuple(map(int, v.split(".")[:2])) >= MIN_VERSION]
    if not found:
        raise RuntimeError("kubernetes-validate bundles no schemas for Kubernetes 1.30+")
    return found


def _root() -> Any:
    return resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")


@functools.cache
def _registry(version: str) -> Registry:  # type: ignore[type-arg]
    defs = json.loads(_root().joinpath(f"v{version}-local-strict/_definitions.json").read_text())
    return Resource.from_contents(defs) @ Registry()


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Validator | None:
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = _root().joinpath(f"v{version}-local-strict/{kind.lower()}-{api}.json")
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_registry(version))


def k8s_errors(obj: dict[str, Any], *, endpoints_only: bool = False) -> list[str]:
    """Strict schema violations of ``obj`` in any Kubernetes release from 1.30 on.

    ``endpoints_only`` checks the oldest and newest bundled releases only (for property tests
    that validate thousands of objects; the APIs we use are unchanged in between).
    """
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    errors = []
    releases = versions()
    if endpoints_only:
        releases = sorted({releases[0], releases[-1]})
    for version in releases:
        validator = _validator(version, obj["apiVersion"], obj["kind"])
        if validator is None:
            errors.append(f"{name}: Kubernetes {version} has no {obj['apiVersion']} {obj['kind']}")
            continue
        for err in validator.iter_errors(obj):
            path = ".".join(str(p) for p in err.absolute_path) or "<root>"
            errors.append(f"{name}: k8s {version}: {path}: {err.message}")
    return errors
