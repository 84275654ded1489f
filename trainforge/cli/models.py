"""``trainforge models …``: list, show and verify published model versions."""

from __future__ import annotations

import json

import typer

from trainforge import registry
from trainforge.access import (
    EMBEDDED_TEAM,
    REGISTRY_SCHEME,
    TEAM_NAME,
    parse_registry_ref,
    team_models_uri,
)
from trainforge.constants import ENV_MODELS_URI
from trainforge.errors import TrainforgeError

app = typer.Typer(help="Published model versions: list, show, verify.", no_args_is_help=True)

MODELS_URI = typer.Option(None, "--models-uri", envvar=ENV_MODELS_URI,
                          help="root of the models bucket (default: $TRAINFORGE_HOME/models)")
TEAM = typer.Option(EMBEDDED_TEAM, "--team",
                    help="whose registry to read: models live under <models>/<team>/")


def _models_uri(value: str | None, team: str) -> str:
    """The root of ``team``'s registry inside the models bucket."""
    if not TEAM_NAME.fullmatch(team):
        raise _fail(f"error: team {team!r} is not a team name (a DNS label)")
    if value:
        return team_models_uri(value, team)
    from trainforge.settings import get_common_settings

    return get_common_settings().team_models_uri(team)


def manifest_location(ref: str, models_uri: str) -> str:
    """The manifest URI for ``name@version``, ``registry://name@version``, a version folder
    URI, or a manifest URI.

    ``@latest`` (or no version) picks the newest published version.

    Raises:
        ModelNotFound: ``@latest`` of a model with no published version.
    """
    if ref.startswith(REGISTRY_SCHEME) or ("://" not in ref and "@" in ref):
        name, version = parse_registry_ref(REGISTRY_SCHEME + ref.removeprefix(REGISTRY_SCHEME),
                                           field="reference")
        if version == "latest":
            versions = registry.list_versions(models_uri, name)
            if not versions:
                raise registry.ModelNotFound(f"model {name!r} has no published version in "
                                             f"{models_uri}")
            version = str(versions[-1]["version"])
        return registry.manifest_uri(models_uri, name, version)
    if ref.endswith("/manifest.json"):
        return ref
    return ref.rstrip("/") + "/manifest.json"


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


@app.command("list")
def list_(name: str = typer.Argument(..., help="model name (the job spec's name)"),
          models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """List a model's published versions, oldest first, with their gate results."""
    root = _models_uri(models_uri, team)
    try:
        versions = registry.list_versions(root, name)
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    if not versions:
        raise _fail(f"model {name!r} has no published version in {root}")
    for manifest in versions:
        gates = manifest.get("gates", {})
        summary = " ".join(f"{k}={v.get('status')}" for k, v in sorted(gates.items()))
        artifacts = ",".join(a["name"] for a in manifest.get("artifacts", []))
        print(f"{manifest.get('version')}\t{manifest.get('created_at', '')}\t{artifacts}\t"
              f"{summary}")


@app.command()
def show(ref: str = typer.Argument(..., help="name@version, registry://name@version or a URI"),
         models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """Print a version's manifest (artifacts, metrics, gates, source job, dataset)."""
    try:
        manifest = registry.read_manifest(manifest_location(ref, _models_uri(models_uri, team)))
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    print(json.dumps(manifest, indent=2, sort_keys=True))


@app.command()
def verify(uri: str = typer.Argument(..., help="manifest or version URI, or name@version"),
           models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """Download every artifact of a version and check its size and checksums.

    Exit status 1 on any problem: missing manifest, missing file, or a size, sha256 or S3
    checksum that differs from the manifest.
    """
    try:
        location = manifest_location(uri, _models_uri(models_uri, team))
        problems = registry.verify(location)
        count = len(registry.read_manifest(location).get("artifacts", []))
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    for problem in problems:
        print(f"FAIL {problem.artifact}: {problem.message}")
    if problems:
        raise _fail(f"{location}: {len(problems)} problem(s)")
    print(f"OK {location}: {count} artifact(s) match the manifest")


@app.command()
def report(ref: str = typer.Argument(..., help="name@version, registry://name@version or a URI"),
           models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """Print a version's held-out scores (mAP50, mAP50-95, per-class AP) and its artifacts."""
    root = _models_uri(models_uri, team)
    try:
        location = manifest_location(ref, root)
        manifest = registry.read_manifest(location)
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    evaluation = manifest.get("evaluation", {})
    metrics = evaluation.get("metrics", manifest.get("metrics", {}))
    split = evaluation.get("split", "?")
    print(f"model {manifest.get('name')}@{manifest.get('version')}  ({split} split)")
    for key in ("mAP50", "mAP50-95", "precision", "recall"):
        if isinstance(metrics.get(key), int | float):
            print(f"  {key:<10} {metrics[key]:.4f}")
    per_class = evaluation.get("per_class", [])
    if per_class:
        print(f"  {'class':<16} {'AP50':>7} {'AP50-95':>8}")
        for row in per_class:
            print(f"  {row.get('name', '?')!s:<16} {_score(row.get('AP50')):>7} "
                  f"{_score(row.get('AP50-95')):>8}")
    if evaluation.get("note"):
        print(f"  note: {evaluation['note']}")
    for fmt, gate in sorted(manifest.get("gates", {}).items()):
        reason = f" ({gate['reason']})" if gate.get("reason") else ""
        print(f"  export {fmt}: {gate.get('status')}{reason}")
    folder = location.rsplit("/", 1)[0]
    print(f"artifacts in {folder}/:")
    for artifact in manifest.get("artifacts", []):
        print(f"  {artifact['name']:<28} {artifact['size']:>12,d} B  "
              f"sha256 {artifact['sha256'][:12]}…")


def _score(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"
