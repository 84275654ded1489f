"""The model registry: versions of a model in the models bucket, each made visible by its manifest.

Layout: ``<models>/<team>/<name>/<version>/{best.pt, model.onnx, model-<gpu>.engine,
report.json, manifest.json}``. Every function here takes the root of one team's registry
(``trainforge.access.team_models_uri``), so a job of one team can neither read nor publish
another team's models: another team's model is simply not there.

The manifest is written last with a conditional create, so a reader that finds a manifest
finds every file it lists, with the listed size and sha256; a version is never overwritten, and
publishing the same version again is a no-op that returns the first manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainforge.access import REGISTRY_SCHEME, parse_registry_ref
from trainforge.aliases import resolve_version
from trainforge.errors import LocationInvalid, ModelNotFound, ObjectNotFound, RegistryError
from trainforge.layout import manifest_key, model_prefix
from trainforge.manifests import (
    find_manifest,
    is_export,
    latest_trained,
    list_versions,
    open_registry,
    read_manifest,
    read_manifest_at,
)
from trainforge.storage import ObjectStore, S3Store, join_key, open_location

__all__ = ["MANIFEST_SCHEMA_VERSION", "ModelNotFound", "Published", "RegistryError",
           "VerifyProblem", "find_manifest", "is_export", "latest_trained", "list_models",
           "list_versions", "manifest_uri", "open_registry", "publish", "read_manifest",
           "resolve", "verify"]

log = logging.getLogger(__name__)

MANIFEST_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Published:
    manifest_uri: str
    manifest: dict[str, Any]
    #: False when the version already existed and this call changed nothing.
    created: bool


@dataclass(frozen=True)
class VerifyProblem:
    artifact: str
    message: str


def publish(
    models_uri: str,
    name: str,
    version: str,
    files: Mapping[str, Path],
    metadata: Mapping[str, Any],
) -> Published:
    """Upload ``files`` (artifact name → local path) and then the manifest.

    Args:
        models_uri: root of the models bucket (s3://… or file://…).
        name: model name (the job spec's ``name``).
        version: version id (the job id: a rerun of the same job publishes the same version).
        files: artifacts to publish; names are file names inside the version folder.
        metadata: extra manifest fields (metrics, gates, source job, dataset fingerprint,
            class names, input shape…).

    Returns:
        The manifest's URI and content, and whether this call created it.
    """
    store, base = open_registry(models_uri)
    prefix = join_key(base, model_prefix(name, version))
    mkey = join_key(base, manifest_key(name, version))
    existing = read_manifest_at(store, mkey)
    if existing is not None:
        log.info("model %s@%s already published; leaving it as it is", name, version)
        return Published(store.uri(mkey), existing, created=False)
    artifacts = []
    for artifact, path in sorted(files.items()):
        if "/" in artifact or artifact == "manifest.json":
            raise RegistryError(f"artifact name {artifact!r} must be a plain file name")
        if store.exists(mkey):  # someone finished first: never touch a published version
            break
        info = store.upload(Path(path), join_key(prefix, artifact))
        artifacts.append({"name": artifact, "size": info.size, "sha256": info.sha256})
    manifest = {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        **dict(metadata),
        "artifacts": artifacts,
    }
    body = json.dumps(manifest, indent=2, sort_keys=True).encode()
    if store.put_if_absent(mkey, body, content_type="application/json"):
        log.info("published %s", store.uri(mkey))
        return Published(store.uri(mkey), manifest, created=True)
    winner = read_manifest_at(store, mkey)
    assert winner is not None  # put_if_absent lost: the manifest exists
    return Published(store.uri(mkey), winner, created=False)


def manifest_uri(models_uri: str, name: str, version: str) -> str:
    """The URI of a version's manifest.json (which may not exist yet)."""
    store, base = open_registry(models_uri)
    return store.uri(join_key(base, manifest_key(name, version)))


def verify(manifest_uri: str) -> list[VerifyProblem]:
    """Download every artifact a manifest lists and check its size and sha256.

    Returns:
        The problems found (empty when the version is intact).
    """
    manifest = read_manifest(manifest_uri)
    store, mkey = open_location(manifest_uri)
    prefix = mkey.rsplit("/", 1)[0]
    problems = []
    for artifact in manifest.get("artifacts", []):
        key = join_key(prefix, artifact["name"])
        digest = hashlib.sha256()
        size = 0
        try:
            with store.open_read(key) as fh:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    size += len(block)
        except ObjectNotFound:
            problems.append(VerifyProblem(artifact["name"], "missing"))
            continue
        if size != artifact["size"]:
            problems.append(VerifyProblem(artifact["name"],
                                          f"size {size} != manifest {artifact['size']}"))
        if digest.hexdigest() != artifact["sha256"]:
            problems.append(VerifyProblem(artifact["name"], "sha256 differs from the manifest"))
        problems += _stored_checksums(store, key, artifact)
    return problems


def _stored_checksums(
    store: ObjectStore, key: str, artifact: Mapping[str, Any]
) -> list[VerifyProblem]:
    """Compare the checksums the store recorded at upload time with the manifest.

    The sha256 object metadata and, on S3, the checksum S3 itself verified on upload must agree
    with the manifest: a disagreement means the object was replaced after publishing.
    """
    problems = []
    try:
        recorded = store.head(key).sha256
        s3_sha = store.checksum_sha256(key) if isinstance(store, S3Store) else None
    except ObjectNotFound:
        return [VerifyProblem(artifact["name"], "missing")]
    if recorded is not None and recorded != artifact["sha256"]:
        problems.append(VerifyProblem(artifact["name"],
                                      "sha256 object metadata differs from the manifest"))
    if s3_sha is not None and s3_sha != artifact["sha256"]:
        problems.append(VerifyProblem(artifact["name"],
                                      "S3 ChecksumSHA256 differs from the manifest"))
    return problems


def list_models(models_uri: str) -> list[str]:
    """The names of the models with at least one published version, sorted."""
    store, base = open_registry(models_uri)
    names = set()
    for info in store.list(base.rstrip("/") + "/" if base else ""):
        relative = info.key[len(base):].lstrip("/") if base else info.key
        parts = relative.split("/")
        if len(parts) == 3 and parts[2] == "manifest.json" and not parts[1].startswith("_"):
            names.add(parts[0])
    return sorted(names)


def resolve(ref: str, models_uri: str, artifact: str = "best.pt") -> str:
    """Turn ``registry://name@version`` (or ``@latest``, the newest trained version, or
    ``@<alias>``) into the URI of one artifact.

    Raises:
        ModelNotFound: the name, version, alias or artifact is not published.
    """
    if not ref.startswith(REGISTRY_SCHEME):
        raise RegistryError(f"{ref!r} is not a registry:// reference")
    try:
        name, version = parse_registry_ref(ref)
    except LocationInvalid as exc:
        raise RegistryError(exc.message) from None
    version = resolve_version(models_uri, name, version)
    store, base = open_registry(models_uri)
    manifest = read_manifest_at(store, join_key(base, manifest_key(name, version)))
    if manifest is None:
        raise ModelNotFound(f"model {name}@{version} is not published in {models_uri}")
    if artifact not in {a["name"] for a in manifest.get("artifacts", [])}:
        raise ModelNotFound(f"model {name}@{version} has no artifact {artifact!r}")
    return store.uri(join_key(base, model_prefix(name, version), artifact))
