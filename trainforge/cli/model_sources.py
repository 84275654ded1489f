"""Where ``trainforge models …`` reads and changes models: the API, or one models store.

The rule: every command goes through the REST API (``TRAINFORGE_URL``, else the embedded
server's ``http://127.0.0.1:8000``; the token from ``TRAINFORGE_TOKEN`` or the embedded
server's dev-token), exactly as ``trainforge jobs`` does, and sees the token's team. Reading a
models store directly is an operator's explicit choice, ``--store URI`` (with ``--team``,
default ``dev``), and says on stderr which store it read. Both sources answer in the API's
shapes (trainforge.lifecycle builds them for both), so every command prints the same either way.
"""

from __future__ import annotations

import getpass
from typing import Any, Protocol

import typer

from trainforge import aliases, lifecycle, registry
from trainforge.access import EMBEDDED_TEAM, TEAM_NAME, team_models_uri
from trainforge.client import Client
from trainforge.errors import InvalidRequest


class ModelSource(Protocol):
    """What the ``models`` commands need, in the API's JSON shapes."""

    def models(self) -> list[dict[str, Any]]: ...

    def overview(self, name: str) -> dict[str, Any]: ...

    def version(self, name: str, ref: str) -> dict[str, Any]: ...

    def promote(self, name: str, ref: str, alias: str, *, reason: str,
                expect: str | None) -> dict[str, Any]: ...

    def history(self, name: str, alias: str | None) -> list[dict[str, Any]]: ...

    def compare(self, name: str, challenger: str, champion: str) -> dict[str, Any]: ...

    def verify(self, name: str, ref: str) -> tuple[str, int, list[str]]:
        """(what was checked, how many files the manifest lists, problems)."""
        ...


class ApiSource:
    """The REST API, as the token's team."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def models(self) -> list[dict[str, Any]]:
        return self.client.list_models()

    def overview(self, name: str) -> dict[str, Any]:
        return self.client.get_model(name)

    def version(self, name: str, ref: str) -> dict[str, Any]:
        return self.client.get_model_version(name, ref)

    def promote(self, name: str, ref: str, alias: str, *, reason: str,
                expect: str | None) -> dict[str, Any]:
        return self.client.promote(name, ref, alias=alias, reason=reason,
                                   expected_version=expect)

    def history(self, name: str, alias: str | None) -> list[dict[str, Any]]:
        moves: list[dict[str, Any]] = self.client.get_model(name)["history"]
        return [m for m in moves if alias is None or m["alias"] == alias]

    def compare(self, name: str, challenger: str, champion: str) -> dict[str, Any]:
        return self.client.compare_models(name, challenger, champion)

    def verify(self, name: str, ref: str) -> tuple[str, int, list[str]]:
        checked = self.client.verify_model(name, ref)
        listed = [f for f in checked.files if f != "manifest.json"]
        return (f"{name}@{checked.version} (through {self.client.base_url})", len(listed),
                checked.problems)


class StoreSource:
    """One team's registry in a models store, read and changed directly (``--store``)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def models(self) -> list[dict[str, Any]]:
        return lifecycle.models(self.root)

    def overview(self, name: str) -> dict[str, Any]:
        return lifecycle.overview(self.root, name)

    def version(self, name: str, ref: str) -> dict[str, Any]:
        return lifecycle.version_detail(self.root, name, ref)

    def version_at(self, location: str) -> dict[str, Any]:
        """The version whose manifest is at ``location`` (a URI in the store)."""
        return lifecycle.describe_version(self.root, registry.read_manifest(location),
                                          ref=location)

    def promote(self, name: str, ref: str, alias: str, *, reason: str,
                expect: str | None) -> dict[str, Any]:
        move = lifecycle.promote(self.root, name, ref, alias, actor=f"{getpass.getuser()} (CLI)",
                                 reason=reason, expected_version=expect)
        return move.to_json()

    def history(self, name: str, alias: str | None) -> list[dict[str, Any]]:
        return [move.to_json() for move in aliases.history(self.root, name, alias)]

    def compare(self, name: str, challenger: str, champion: str) -> dict[str, Any]:
        return lifecycle.stored_comparison(self.root, name, challenger, champion)

    def verify(self, name: str, ref: str) -> tuple[str, int, list[str]]:
        version = aliases.resolve_version(self.root, name, ref)
        return self.verify_manifest(registry.manifest_uri(self.root, name, version))

    @staticmethod
    def verify_manifest(location: str) -> tuple[str, int, list[str]]:
        """Every file of the manifest at ``location``, and the checksums the store recorded."""
        problems = [f"{p.artifact}: {p.message}" for p in registry.verify(location)]
        return location, len(registry.read_manifest(location).get("artifacts", [])), problems


def open_source(store: str | None, team: str | None, client: Client) -> ModelSource:
    """The API (the rule), or ``store``'s registry of ``team`` when ``--store`` is given; the
    latter says on stderr which store it reads.

    Raises:
        InvalidRequest: ``--team`` without ``--store`` (the token decides the team), or not a
            team name.
    """
    if store is None:
        if team is not None:
            raise InvalidRequest("--team goes with --store: through the API, your token "
                                 "decides the team")
        return ApiSource(client)
    team = team or EMBEDDED_TEAM
    if not TEAM_NAME.fullmatch(team):
        raise InvalidRequest(f"team {team!r} is not a team name (a DNS label)")
    root = team_models_uri(store, team)
    typer.echo(f"reading the models store {root} directly (--store), not the API", err=True)
    return StoreSource(root)
