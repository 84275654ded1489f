"""``trainforge models …``: a team's models, their versions and aliases, read and changed
straight in the models store (an operator's or the embedded server's tool; remote users have the
same views and actions through ``/v1/models`` and :class:`trainforge.client.Client`)."""

from __future__ import annotations

import json

import typer

from trainforge import aliases, lifecycle, registry
from trainforge.access import (
    EMBEDDED_TEAM,
    REGISTRY_SCHEME,
    TEAM_NAME,
    parse_registry_ref,
    team_models_uri,
)
from trainforge.constants import ENV_MODELS_URI
from trainforge.errors import TrainforgeError

app = typer.Typer(help="Models: versions, aliases (champion…), promotion, comparison.",
                  no_args_is_help=True)

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

    ``@latest`` (or no version) picks the newest trained version, ``@<alias>`` the version
    the alias points at.

    Raises:
        ModelNotFound: no published version, or an unset alias.
    """
    if ref.startswith(REGISTRY_SCHEME) or ("://" not in ref and "@" in ref):
        name, version = _ref(ref)
        version = aliases.resolve_version(models_uri, name, version)
        return registry.manifest_uri(models_uri, name, version)
    if ref.endswith("/manifest.json"):
        return ref
    return ref.rstrip("/") + "/manifest.json"


def _ref(ref: str) -> tuple[str, str]:
    """``NAME@X`` or ``registry://NAME@X`` → (name, version), resolving ``X`` later."""
    return parse_registry_ref(REGISTRY_SCHEME + ref.removeprefix(REGISTRY_SCHEME),
                              field="reference")


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


@app.command("list")
def list_(name: str | None = typer.Argument(None, help="a model: list its versions"),
          models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """List the team's models (name, versions, newest, aliases), or one model's versions,
    oldest first, with their gate results."""
    root = _models_uri(models_uri, team)
    if name is None:
        try:
            found = lifecycle.models(root)
        except TrainforgeError as exc:
            raise _fail(f"error: {exc.message}") from None
        for model in found:
            named = " ".join(f"{a}={v}" for a, v in model["aliases"].items()) or "-"
            print(f"{model['name']}\t{model['versions']} version(s)\tlatest {model['latest']}"
                  f"\t{named}")
        return
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
def show(ref: str = typer.Argument(..., help="NAME, or name@version / name@alias / a URI"),
         models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """A model (NAME): its versions with scores, aliases and promotion verdicts. A version
    (NAME@VERSION or @alias): its manifest (artifacts, metrics, gates, source job, dataset)."""
    root = _models_uri(models_uri, team)
    if "@" not in ref and "://" not in ref:
        try:
            model = lifecycle.overview(root, ref)
        except TrainforgeError as exc:
            raise _fail(f"error: {exc.message}") from None
        _print_overview(model)
        return
    try:
        manifest = registry.read_manifest(manifest_location(ref, root))
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    decision = lifecycle.read_decision(root, str(manifest.get("name")),
                                       str(manifest.get("version")))
    if decision is not None:
        manifest = {**manifest, "promotion": {k: decision.get(k) for k in (
            "alias", "champion", "outcome", "summary", "decided_at")}}
    print(json.dumps(manifest, indent=2, sort_keys=True))


def _print_overview(model: dict[str, object]) -> None:
    heads = model["aliases"]
    assert isinstance(heads, dict)
    print(f"model {model['name']}")
    for alias, head in heads.items():
        print(f"  {alias} → {head['version']}  (moved {head['moved_at']} by {head['actor']})")
    print(f"  {'version':<28} {'mAP50':>7} {'mAP50-95':>8}  aliases / promotion")
    versions = model["versions"]
    assert isinstance(versions, list)
    for row in versions:
        metrics = row["metrics"]
        verdict = row["promotion"]["summary"] if row["promotion"] else ""
        named = ",".join(row["aliases"])
        print(f"  {row['version']:<28} {_score(metrics.get('mAP50')):>7} "
              f"{_score(metrics.get('mAP50-95')):>8}  {named + ' ' if named else ''}{verdict}")


@app.command()
def promote(ref: str = typer.Argument(..., help="NAME@VERSION (or NAME@other-alias)"),
            alias: str = typer.Option("champion", "--alias", help="the alias to move"),
            reason: str = typer.Option("", "--reason", help="why (kept in the history)"),
            expect: str | None = typer.Option(
                None, "--expect", help="only if the alias points at this version now"),
            models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """Point an alias at a version: a manual promotion, or a rollback to an older version."""
    import getpass

    root = _models_uri(models_uri, team)
    try:
        name, version = _ref(ref)
        move = lifecycle.promote(root, name, version, alias,
                                 actor=f"{getpass.getuser()} (CLI)",
                                 reason=reason or "moved with trainforge models promote",
                                 expected_version=expect)
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    print(f"{name}@{alias}: {move.previous or '(unset)'} → {move.version} (move {move.seq})")


@app.command()
def history(name: str = typer.Argument(..., help="model name"),
            alias: str | None = typer.Option(None, "--alias", help="only this alias"),
            models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """Every alias move of a model, oldest first: when, which alias, from → to, who, why."""
    root = _models_uri(models_uri, team)
    try:
        moves = aliases.history(root, name, alias)
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    if not moves:
        raise _fail(f"model {name!r} has no alias moves")
    for move in moves:
        print(f"{move.moved_at}\t{move.alias}\t{move.previous or '-'} → {move.version}\t"
              f"{move.actor}\t{move.reason}")


@app.command()
def compare(challenger: str = typer.Argument(..., help="NAME@VERSION or NAME@alias"),
            champion: str = typer.Argument(..., help="NAME@VERSION or NAME@alias"),
            dataset: str | None = typer.Option(
                None, "--dataset", help="re-evaluate both versions on this dataset's held-out "
                "split (default: compare the scores recorded at publication, which needs "
                "both to have been evaluated on the same dataset version)"),
            imgsz: int | None = typer.Option(None, "--imgsz", help="default: the challenger's"),
            batch: int = typer.Option(16, "--batch"),
            output: str | None = typer.Option(None, "--output", "-o",
                                              help="also write comparison.json here"),
            models_uri: str | None = MODELS_URI, team: str = TEAM) -> None:
    """Compare two versions of one model class by class, with the default policy's verdict."""
    root = _models_uri(models_uri, team)
    try:
        name, first = _ref(challenger)
        other, second = _ref(champion)
        if other != name:
            raise _fail(f"error: compare two versions of one model, not {name} and {other}")
        if dataset is None:
            comparison = lifecycle.stored_comparison(root, name, first, second)
        else:
            comparison = _evaluated_comparison(root, name, first, second, dataset, imgsz, batch)
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None
    text = json.dumps(comparison, indent=2, sort_keys=True)
    if output:
        from pathlib import Path

        Path(output).write_text(text + "\n")
    _print_comparison(comparison)


def _evaluated_comparison(root: str, name: str, first: str, second: str, dataset: str,
                          imgsz: int | None, batch: int) -> dict[str, object]:
    """Both versions evaluated here, on ``dataset``'s test split (val when it has none)."""
    import tempfile
    from pathlib import Path

    from jobs.core.adapter import harden_loading, prepare_environment
    from jobs.train.promote import evaluate_pair
    from trainforge import promotion
    from trainforge.datasets import sync, write_local_data_yaml
    from trainforge.spec import PromotePolicy

    versions = tuple(aliases.resolve_version(root, name, ref) for ref in (first, second))
    manifest = registry.find_manifest(root, name, versions[0])
    if manifest is None:
        raise registry.ModelNotFound(f"model {name}@{versions[0]} is not published")
    size = imgsz or int(manifest.get("input_shape", [1, 3, 640, 640])[-1])
    with tempfile.TemporaryDirectory(prefix="trainforge-compare-") as tmp:
        work = Path(tmp)
        prepare_environment(work / "ultralytics")
        harden_loading()
        synced = sync(dataset, work / "cache")
        data_yaml = write_local_data_yaml(synced.path, work / "data.yaml")
        try:
            comparison = evaluate_pair(name, (versions[0], versions[1]), models_uri=root,
                                       data_yaml=data_yaml, imgsz=size, batch=batch,
                                       work_dir=work)
        except promotion.NotComparable as exc:
            raise _fail(f"error: {exc}") from None
    comparison["dataset"] = {"uri": dataset, "fingerprint": synced.fingerprint,
                             "split": comparison["settings"]["split"]}
    verdict = promotion.decide(comparison, PromotePolicy())
    comparison["verdict"] = verdict.to_json()
    return comparison


def _print_comparison(comparison: dict[str, object]) -> None:
    mine, theirs = comparison["challenger"], comparison["champion"]
    deltas = comparison["deltas"]
    assert isinstance(mine, dict) and isinstance(theirs, dict) and isinstance(deltas, dict)
    print(f"{'':<12} {mine['version']:>28} {theirs['version']:>28} {'delta':>8}")
    for key in ("mAP50", "mAP50-95", "precision", "recall"):
        print(f"{key:<12} {_score(mine['metrics'].get(key)):>28} "
              f"{_score(theirs['metrics'].get(key)):>28} {_delta(deltas.get(key)):>8}")
    per_class = comparison["per_class"]
    assert isinstance(per_class, list)
    print(f"{'class':<16} {'AP50-95 challenger':>18} {'champion':>9} {'delta':>8} images")
    for row in per_class:
        print(f"{row['name']!s:<16} {_score(row['challenger']['AP50-95']):>18} "
              f"{_score(row['champion']['AP50-95']):>9} {_delta(row['delta']['AP50-95']):>8} "
              f"{row.get('images', '-')}")
    verdict = comparison["verdict"]
    assert isinstance(verdict, dict)
    print(f"verdict (default policy): {verdict['summary']}")


def _delta(value: object) -> str:
    return f"{value:+.4f}" if isinstance(value, int | float) else "-"


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
