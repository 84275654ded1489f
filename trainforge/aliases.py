"""Model aliases (``champion``, ``staging``…): named pointers at one published version each.

An alias is an append-only log in the team's registry,
``<name>/_aliases/<alias>/<seq>.json``, one object per move, numbered 1, 2, 3… The alias points
where its highest-numbered record says. A move writes record ``seq + 1`` with a conditional
create (``If-None-Match: *`` on S3, ``link()`` on a file system), so:

* no reader ever sees a half-written alias: each record is one atomic object write, and a
  process killed mid-move leaves either the old head or the new one;
* of two concurrent moves from the same head, exactly one creates the next record; the other
  gets :class:`AliasConflict` and changes nothing;
* the log *is* the history: who moved it, why, when, from which version, with which figures.

Rollback is a move like any other, to an older version.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from trainforge.access import check_alias_name
from trainforge.errors import (
    AliasConflict,
    LocationInvalid,
    ModelNotFound,
    ObjectNotFound,
    RegistryError,
)
from trainforge.layout import alias_log_prefix
from trainforge.manifests import find_manifest, latest_trained, list_versions, open_registry
from trainforge.storage import join_key

__all__ = ["AliasConflict", "AliasMove", "aliases", "current", "history", "move", "record",
           "resolve_version"]

log = logging.getLogger(__name__)

ALIAS_SCHEMA_VERSION = 1
_RECORD = re.compile(r"^(\d{10})\.json$")


@dataclass(frozen=True)
class AliasMove:
    """One record of an alias's log: the alias points at ``version`` from ``moved_at`` on."""

    model: str
    alias: str
    seq: int
    version: str
    previous: str | None
    actor: str
    reason: str
    moved_at: str
    #: The promotion verdict's figures, when a policy made the move.
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": ALIAS_SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AliasMove:
        previous = data.get("previous")
        return cls(model=str(data["model"]), alias=str(data["alias"]), seq=int(data["seq"]),
                   version=str(data["version"]),
                   previous=None if previous is None else str(previous),
                   actor=str(data.get("actor", "")), reason=str(data.get("reason", "")),
                   moved_at=str(data["moved_at"]), details=dict(data.get("details") or {}))


def _alias(alias: str) -> str:
    try:
        return check_alias_name(alias)
    except LocationInvalid as exc:
        raise RegistryError(exc.message) from None


def history(models_uri: str, name: str, alias: str | None = None) -> list[AliasMove]:
    """Every move of ``alias`` (or of every alias of the model), oldest first."""
    store, base = open_registry(models_uri)
    prefix = join_key(base, name, "_aliases") + "/"
    if alias is not None:
        prefix = join_key(base, alias_log_prefix(name, _alias(alias)))
    moves = []
    for info in store.list(prefix):
        if not _RECORD.fullmatch(info.key.rsplit("/", 1)[-1]):
            continue  # a file system store's temporary file of a write in flight
        try:
            moves.append(AliasMove.from_json(json.loads(store.get(info.key))))
        except ObjectNotFound:
            continue
    return sorted(moves, key=lambda m: (m.moved_at, m.alias, m.seq))


def current(models_uri: str, name: str, alias: str) -> AliasMove | None:
    """Where ``alias`` points now (its newest record), or None when it was never set."""
    moves = history(models_uri, name, alias)
    return max(moves, key=lambda m: m.seq) if moves else None


def aliases(models_uri: str, name: str) -> dict[str, AliasMove]:
    """Every alias of a model and its head record."""
    heads: dict[str, AliasMove] = {}
    for move in history(models_uri, name):
        if move.alias not in heads or move.seq > heads[move.alias].seq:
            heads[move.alias] = move
    return heads


def move(
    models_uri: str,
    name: str,
    alias: str,
    version: str,
    *,
    actor: str,
    reason: str,
    expected: AliasMove | None | str = "head",
    details: dict[str, Any] | None = None,
    before_write: Callable[[AliasMove], None] | None = None,
) -> AliasMove:
    """Point ``alias`` at ``version`` (a published version), recording who and why.

    Args:
        expected: the head the caller based its decision on (None: the alias was unset).
            The move fails with :class:`AliasConflict` when the alias has moved since. The
            default, ``"head"``, reads the head now (a manual promotion or rollback).
        before_write: called with the record just before it is written (the API records its
            webhook event there, so that a crash right after the write loses nothing); an
            exception from it stops the move.

    Returns:
        The new record.

    Raises:
        ModelNotFound: ``version`` is not published.
        AliasConflict: another move got there first.
    """
    _alias(alias)
    if find_manifest(models_uri, name, version) is None:
        raise ModelNotFound(f"model {name}@{version} is not published; only a published "
                            "version can take an alias")
    head = current(models_uri, name, alias) if expected == "head" else expected
    assert not isinstance(head, str)
    record = AliasMove(
        model=name, alias=alias, seq=(head.seq if head else 0) + 1, version=version,
        previous=head.version if head else None, actor=actor, reason=reason,
        moved_at=datetime.now(UTC).isoformat(), details=dict(details or {}))
    if before_write is not None:
        before_write(record)
    store, base = open_registry(models_uri)
    key = join_key(base, alias_log_prefix(name, alias), f"{record.seq:010d}.json")
    body = json.dumps(record.to_json(), indent=2, sort_keys=True).encode()
    if not store.put_if_absent(key, body, content_type="application/json"):
        winner = current(models_uri, name, alias)
        raise AliasConflict(
            f"{name}@{alias} moved while this move was decided: it points at "
            f"{winner.version if winner else '?'} (by {winner.actor if winner else '?'}); "
            f"nothing changed — decide again against the new head")
    log.info("%s@%s → %s (%s)", name, alias, version, reason)
    return record


def record(models_uri: str, name: str, alias: str, seq: int) -> AliasMove | None:
    """The ``seq``-th move of ``alias``, or None when it was never written."""
    store, base = open_registry(models_uri)
    key = join_key(base, alias_log_prefix(name, _alias(alias)), f"{seq:010d}.json")
    try:
        return AliasMove.from_json(json.loads(store.get(key)))
    except ObjectNotFound:
        return None


def resolve_version(models_uri: str, name: str, version_or_alias: str) -> str:
    """The version a ``NAME@X`` reference means: ``latest`` (the newest trained version, see
    :func:`trainforge.registry.latest_trained`), an alias, or a version itself.

    Raises:
        ModelNotFound: nothing (or, for ``latest``, nothing trained) is published, or the
            alias is unset.
    """
    if version_or_alias == "latest":
        versions = list_versions(models_uri, name)
        if not versions:
            raise ModelNotFound(f"model {name!r} has no published version")
        latest = latest_trained(versions)
        if latest is None:
            raise ModelNotFound(
                f"model {name!r} has only export versions ({versions[-1]['version']}…): "
                "@latest is the newest trained version; name a version or an alias")
        return latest
    try:
        check_alias_name(version_or_alias)
    except LocationInvalid:
        return version_or_alias  # a version id
    head = current(models_uri, name, version_or_alias)
    if head is not None:
        return head.version
    if find_manifest(models_uri, name, version_or_alias) is None:
        raise ModelNotFound(f"model {name!r} has no alias or version {version_or_alias!r}")
    return version_or_alias  # a version whose id happens to look like an alias
