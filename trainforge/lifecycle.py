"""A model's lifecycle as the API and the CLI show it: versions, aliases, decisions, history.

One implementation for both doors (``/v1/models`` and ``trainforge models``); every function
takes the root of one team's registry, so another team's model is simply not found.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from trainforge import aliases, promotion, registry
from trainforge.errors import InvalidRequest, ObjectNotFound
from trainforge.layout import decision_key
from trainforge.spec import PromotePolicy
from trainforge.storage import join_key


def read_decision(models_uri: str, name: str, version: str) -> dict[str, Any] | None:
    """What a job's promotion step decided for a version, or None (not decided)."""
    store, base = registry.open_registry(models_uri)
    try:
        data: dict[str, Any] = json.loads(store.get(join_key(base, decision_key(name, version))))
    except ObjectNotFound:
        return None
    return data


def keep_decision(models_uri: str, record: dict[str, Any]) -> None:
    """Store a decision once (a rerun of the job leaves the first one)."""
    store, base = registry.open_registry(models_uri)
    body = json.dumps(record, indent=2, sort_keys=True).encode()
    store.put_if_absent(join_key(base, decision_key(record["model"], record["version"])), body,
                        content_type="application/json")


def version_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The few fields of a manifest a listing shows."""
    evaluation = manifest.get("evaluation", {})
    metrics = evaluation.get("metrics", manifest.get("metrics", {}))
    return {
        "version": str(manifest.get("version")),
        "created_at": manifest.get("created_at"),
        "source_job_id": manifest.get("source_job_id") or manifest.get("source", {}).get("job_id"),
        # An export-only version keeps per-format figures (dicts) here: a listing shows scores.
        "metrics": {k: v for k, v in metrics.items() if v is None or isinstance(v, int | float)},
        "split": evaluation.get("split"),
        "dataset_fingerprint": _dataset_fingerprint(manifest),
        "gates": {k: v.get("status") for k, v in sorted(manifest.get("gates", {}).items())},
        "artifacts": [a["name"] for a in manifest.get("artifacts", [])],
        "files": [{k: a[k] for k in ("name", "size", "sha256")}
                  for a in manifest.get("artifacts", [])],
    }


def _dataset_fingerprint(manifest: dict[str, Any]) -> str | None:
    """A training version records ``dataset.fingerprint``; an export-only one
    ``dataset_fingerprint``."""
    value = manifest.get("dataset", {}).get("fingerprint") or manifest.get("dataset_fingerprint")
    return None if value is None else str(value)


def _promotion(decision: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fields of a promotion decision that a version's views show."""
    if decision is None:
        return None
    return {k: decision.get(k) for k in ("alias", "champion", "outcome", "summary", "decided_at")}


def version_detail(models_uri: str, name: str, ref: str) -> dict[str, Any]:
    """One version, named by id, alias or ``latest``: its manifest (files with size and
    sha256), scores, gates, dataset, source job, base model, aliases and promotion verdict.

    ``ref`` is resolved once; every field comes from the one version it resolved to (a version
    never changes once published), and ``version`` says which.

    Raises:
        ModelNotFound: no such model, version or alias (or the alias is unset).
    """
    version = aliases.resolve_version(models_uri, name, ref)
    manifest = registry.find_manifest(models_uri, name, version)
    if manifest is None:
        raise registry.ModelNotFound(f"model {name}@{version} is not published")
    return describe_version(models_uri, manifest, ref=ref)


def describe_version(models_uri: str, manifest: dict[str, Any], *, ref: str) -> dict[str, Any]:
    """:func:`version_detail` of a manifest already read; its aliases and promotion decision
    are looked up in the registry at ``models_uri``."""
    name, version = str(manifest.get("name")), str(manifest.get("version"))
    source = manifest.get("source", {})
    return {
        **version_summary(manifest),
        "name": name,
        "ref": ref,
        "base": manifest.get("base") or source.get("base"),
        "dataset_uri": manifest.get("dataset", {}).get("uri") or source.get("dataset"),
        "evaluation": manifest.get("evaluation"),
        "gates": manifest.get("gates", {}),
        "class_names": manifest.get("class_names"),
        "input_shape": manifest.get("input_shape"),
        "aliases": sorted(alias for alias, head in aliases.aliases(models_uri, name).items()
                          if head.version == version),
        "promotion": _promotion(read_decision(models_uri, name, version)),
        "manifest": manifest,
    }


def overview(models_uri: str, name: str) -> dict[str, Any]:
    """Versions (oldest first) with their aliases and promotion decisions, the aliases, and
    every alias move.

    Raises:
        ModelNotFound: the team has no version of ``name``.
    """
    manifests = registry.list_versions(models_uri, name)
    if not manifests:
        raise registry.ModelNotFound(f"model {name!r} has no published version")
    moves = aliases.history(models_uri, name)
    heads = aliases.aliases(models_uri, name)
    versions = []
    for manifest in manifests:
        row = version_summary(manifest)
        row["aliases"] = sorted(a for a, head in heads.items() if head.version == row["version"])
        row["promotion"] = _promotion(read_decision(models_uri, name, row["version"]))
        versions.append(row)
    return {
        "name": name,
        "versions": versions,
        "aliases": {alias: head.to_json() for alias, head in sorted(heads.items())},
        "history": [move.to_json() for move in moves],
    }


def models(models_uri: str) -> list[dict[str, Any]]:
    """Every model of the team: version count, newest trained version (``@latest``),
    aliases."""
    out = []
    for name in registry.list_models(models_uri):
        manifests = registry.list_versions(models_uri, name)
        heads = aliases.aliases(models_uri, name)
        out.append({
            "name": name,
            "versions": len(manifests),
            "latest": registry.latest_trained(manifests),
            "aliases": {alias: head.version for alias, head in sorted(heads.items())},
        })
    return out


def promote(models_uri: str, name: str, version_or_alias: str, alias: str, *, actor: str,
            reason: str, expected_version: str | None = None,
            before_write: Callable[[aliases.AliasMove], None] | None = None
            ) -> aliases.AliasMove:
    """Point ``alias`` at a version by hand (a promotion or a rollback).

    Args:
        expected_version: move only if the alias points there now (``""``: only if unset);
            None moves whatever it points at.
        before_write: see :func:`trainforge.aliases.move`.

    Raises:
        ModelNotFound: no such version.
        AliasConflict: the alias is not where ``expected_version`` says, or moved meanwhile.
    """
    version = aliases.resolve_version(models_uri, name, version_or_alias)
    head = aliases.current(models_uri, name, alias)
    if expected_version is not None and (head.version if head else "") != expected_version:
        raise aliases.AliasConflict(
            f"{name}@{alias} points at {head.version if head else 'nothing'}, not "
            f"{expected_version or 'nothing'}; nothing changed")
    return aliases.move(models_uri, name, alias, version, actor=actor, reason=reason,
                        expected=head, before_write=before_write)


def stored_comparison(models_uri: str, name: str, challenger: str, champion: str,
                      policy: PromotePolicy | None = None) -> dict[str, Any]:
    """Compare two versions by the held-out evaluations recorded when they were published.

    That is fair only when both were scored on the same dataset version and split: otherwise
    this refuses, and the caller re-evaluates both on one dataset
    (``trainforge models compare --dataset``).

    Raises:
        ModelNotFound: a version is not published.
        InvalidRequest: the versions were evaluated on different datasets or splits, or detect
            different classes.
    """
    sides = {}
    for role, ref in (("challenger", challenger), ("champion", champion)):
        version = aliases.resolve_version(models_uri, name, ref)
        manifest = registry.find_manifest(models_uri, name, version)
        if manifest is None:
            raise registry.ModelNotFound(f"model {name}@{version} is not published")
        sides[role] = manifest
    mine, theirs = sides["challenger"], sides["champion"]
    where = {role: (m.get("dataset", {}).get("fingerprint"), m.get("evaluation", {}).get("split"))
             for role, m in sides.items()}
    if where["challenger"] != where["champion"] or None in where["challenger"]:
        raise InvalidRequest(
            f"{name}@{mine['version']} was evaluated on dataset {_short(where['challenger'])} "
            f"and {name}@{theirs['version']} on {_short(where['champion'])}: their reports are "
            "not comparable; re-evaluate both on one dataset with "
            "trainforge models compare --dataset URI")
    try:
        comparison = promotion.compare(
            *({"version": str(m["version"]), "metrics": m["evaluation"]["metrics"],
               "per_class": m["evaluation"]["per_class"]} for m in (mine, theirs)))
    except promotion.NotComparable as exc:
        raise InvalidRequest(str(exc)) from None
    comparison["model"] = name
    comparison["dataset"] = {"uri": mine.get("dataset", {}).get("uri"),
                             "fingerprint": where["challenger"][0], "split": where["challenger"][1]}
    comparison["source"] = "the evaluations recorded at publication"
    verdict = promotion.decide(comparison, policy or PromotePolicy(),
                               gates=mine.get("gates", {}),
                               export_formats=sorted({k.split("-")[0] for k in
                                                      mine.get("gates", {})}))
    comparison["verdict"] = verdict.to_json()
    return comparison


def _short(where: tuple[Any, Any]) -> str:
    fingerprint, split = where
    return f"{str(fingerprint)[:12] if fingerprint else '?'} ({split or '?'} split)"
