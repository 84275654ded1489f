"""``trainforge models …``: a team's models, their versions, aliases and files.

Every command goes through the REST API (the same rule as ``trainforge jobs``); ``--store URI``
reads and changes a models store directly instead, an operator's mode that says which store it
read (trainforge/cli/model_sources.py). ``pull`` always goes through the API: a deployment needs
a token, never credentials of the models store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from trainforge.access import REGISTRY_SCHEME, parse_registry_ref
from trainforge.cli import plugins
from trainforge.cli.model_sources import ModelSource, StoreSource, open_source
from trainforge.client import FILE_KINDS, ApiError, Client
from trainforge.errors import InvalidRequest, TrainforgeError

app = typer.Typer(
    help="Models: versions, aliases (champion…), promotion, comparison, files. Through the "
    "API (TRAINFORGE_URL, else the embedded server) like `jobs`; --store URI reads a models "
    "store directly.",
    no_args_is_help=True,
)
stderr = Console(stderr=True)

STORE = typer.Option(
    None, "--store",
    help="read the models store at this URI directly instead of the API (an operator's mode: "
    "the store's credentials, and --team); the store it read is printed on stderr")
TEAM = typer.Option(None, "--team",
                    help="with --store: whose registry (<store>/<team>/; default dev)")


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)


@contextmanager
def _errors() -> Iterator[None]:
    """A trainforge error ends the command with its message (exit status 1)."""
    try:
        yield
    except ApiError as exc:
        hint = ("; start `trainforge serve`, set TRAINFORGE_URL, or read a models store with "
                "--store URI") if exc.code == "unreachable" else ""
        raise _fail(f"error: {exc.message}{hint}") from None
    except TrainforgeError as exc:
        raise _fail(f"error: {exc.message}") from None


@contextmanager
def _source(store: str | None, team: str | None) -> Iterator[ModelSource]:
    """The source the options name (trainforge/cli/model_sources.py)."""
    with Client() as client, _errors():
        yield open_source(store, team, client)


def _ref(ref: str) -> tuple[str, str]:
    """``NAME@X`` or ``registry://NAME@X`` → (name, X); a bare NAME means ``latest``."""
    return parse_registry_ref(REGISTRY_SCHEME + ref.removeprefix(REGISTRY_SCHEME),
                              field="reference")


def _is_uri(ref: str) -> bool:
    return "://" in ref and not ref.startswith(REGISTRY_SCHEME)


def _manifest_uri(ref: str, store: str | None) -> str:
    """A manifest or version-folder URI as a manifest URI (``--store`` mode only).

    Raises:
        InvalidRequest: without ``--store``.
    """
    if store is None:
        raise InvalidRequest(f"{ref} is a location in a models store: read it with --store "
                             "URI, or name the version NAME@VERSION to go through the API")
    return ref if ref.endswith("/manifest.json") else ref.rstrip("/") + "/manifest.json"


def _version(source: ModelSource, ref: str, store: str | None) -> tuple[dict[str, Any], str]:
    """A version's detail (the API's shape) and where it was read."""
    if _is_uri(ref):
        location = _manifest_uri(ref, store)
        assert isinstance(source, StoreSource)  # _manifest_uri refuses a URI without --store
        return source.version_at(location), location.rsplit("/", 1)[0] + "/"
    name, version = _ref(ref)
    detail = source.version(name, version)
    return detail, f"{name}@{detail['version']}"


@app.command("list")
def list_(name: str | None = typer.Argument(None, help="a model: list its versions"),
          store: str | None = STORE, team: str | None = TEAM) -> None:
    """List the team's models (name, versions, newest, aliases), or one model's versions,
    oldest first, with their files and gate results."""
    with _source(store, team) as source:
        if name is None:
            for model in source.models():
                named = " ".join(f"{a}={v}" for a, v in model["aliases"].items()) or "-"
                print(f"{model['name']}\t{model['versions']} version(s)\t"
                      f"latest {model['latest']}\t{named}")
            return
        for row in source.overview(name)["versions"]:
            gates = " ".join(f"{k}={v}" for k, v in sorted(row["gates"].items()))
            print(f"{row['version']}\t{row['created_at'] or ''}\t{','.join(row['artifacts'])}"
                  f"\t{gates}")


@app.command()
def show(ref: str = typer.Argument(
             ..., help="NAME; or NAME@VERSION, NAME@alias, NAME@latest (with --store also a "
             "manifest or version-folder URI)"),
         store: str | None = STORE, team: str | None = TEAM) -> None:
    """A model (NAME): its versions with scores, aliases and promotion verdicts. A version
    (NAME@REF): its manifest (files, metrics, gates, source job, dataset, base) and verdict."""
    with _source(store, team) as source:
        if "@" not in ref and not _is_uri(ref):
            _print_overview(source.overview(ref.removeprefix(REGISTRY_SCHEME)))
            return
        detail, _ = _version(source, ref, store)
    manifest = dict(detail["manifest"])
    if detail.get("promotion"):
        manifest["promotion"] = detail["promotion"]
    print(json.dumps(manifest, indent=2, sort_keys=True))


def _print_overview(model: dict[str, Any]) -> None:
    print(f"model {model['name']}")
    for alias, head in model["aliases"].items():
        print(f"  {alias} → {head['version']}  (moved {head['moved_at']} by {head['actor']})")
    print(f"  {'version':<28} {'mAP50':>7} {'mAP50-95':>8}  aliases / promotion")
    for row in model["versions"]:
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
            store: str | None = STORE, team: str | None = TEAM) -> None:
    """Point an alias at a version: a manual promotion, or a rollback to an older version."""
    with _source(store, team) as source:
        name, version = _ref(ref)
        move = source.promote(name, version, alias,
                              reason=reason or "moved with trainforge models promote",
                              expect=expect)
    print(f"{name}@{alias}: {move['previous'] or '(unset)'} → {move['version']} "
          f"(move {move['seq']})")


@app.command()
def history(name: str = typer.Argument(..., help="model name"),
            alias: str | None = typer.Option(None, "--alias", help="only this alias"),
            store: str | None = STORE, team: str | None = TEAM) -> None:
    """Every alias move of a model, oldest first: when, which alias, from → to, who, why."""
    with _source(store, team) as source:
        moves = source.history(name, alias)
    if not moves:
        raise _fail(f"model {name!r} has no alias moves")
    for move in moves:
        print(f"{move['moved_at']}\t{move['alias']}\t{move['previous'] or '-'} → "
              f"{move['version']}\t{move['actor']}\t{move['reason']}")


@app.command()
def compare(challenger: str = typer.Argument(..., help="NAME@VERSION or NAME@alias"),
            champion: str = typer.Argument(..., help="NAME@VERSION or NAME@alias"),
            dataset: str | None = typer.Option(
                None, "--dataset", help="re-evaluate both versions on this machine, on this "
                "dataset's held-out split: reads both versions' weights from the models "
                "store, so it needs --store (default: compare the scores recorded at "
                "publication, through the API, which needs both evaluated on the same "
                "dataset version)"),
            imgsz: int | None = typer.Option(None, "--imgsz", help="default: the challenger's"),
            batch: int = typer.Option(16, "--batch"),
            output: str | None = typer.Option(None, "--output", "-o",
                                              help="also write comparison.json here"),
            store: str | None = STORE, team: str | None = TEAM) -> None:
    """Compare two versions of one model class by class, with the default policy's verdict."""
    with _source(store, team) as source:
        name, first = _ref(challenger)
        other, second = _ref(champion)
        if other != name:
            raise _fail(f"error: compare two versions of one model, not {name} and {other}")
        if dataset is None:
            comparison = source.compare(name, first, second)
        elif not isinstance(source, StoreSource):
            raise _fail("error: --dataset re-evaluates both versions here, from the models "
                        "store: add --store URI (or drop --dataset to compare the recorded "
                        "scores through the API)")
        else:
            evaluated_comparison = plugins.load(plugins.EVALUATION_GROUP, "compare")
            if evaluated_comparison is None:
                raise _fail("error: --dataset evaluates both versions here and needs the "
                            "training extra (Ultralytics): install trainforge[train]")
            comparison = evaluated_comparison(source.root, name, first, second, dataset,
                                              imgsz, batch)
    if output:
        Path(output).write_text(json.dumps(comparison, indent=2, sort_keys=True) + "\n")
    _print_comparison(comparison)


def _print_comparison(comparison: dict[str, Any]) -> None:
    mine, theirs = comparison["challenger"], comparison["champion"]
    deltas = comparison["deltas"]
    print(f"{'':<12} {mine['version']:>28} {theirs['version']:>28} {'delta':>8}")
    for key in ("mAP50", "mAP50-95", "precision", "recall"):
        print(f"{key:<12} {_score(mine['metrics'].get(key)):>28} "
              f"{_score(theirs['metrics'].get(key)):>28} {_delta(deltas.get(key)):>8}")
    print(f"{'class':<16} {'AP50-95 challenger':>18} {'champion':>9} {'delta':>8} images")
    for row in comparison["per_class"]:
        print(f"{row['name']!s:<16} {_score(row['challenger']['AP50-95']):>18} "
              f"{_score(row['champion']['AP50-95']):>9} {_delta(row['delta']['AP50-95']):>8} "
              f"{row.get('images', '-')}")
    print(f"verdict (default policy): {comparison['verdict']['summary']}")


def _delta(value: object) -> str:
    return f"{value:+.4f}" if isinstance(value, int | float) else "-"


@app.command()
def verify(ref: str = typer.Argument(
               ..., help="NAME@VERSION or NAME@alias (with --store also a manifest or "
               "version-folder URI)"),
           store: str | None = STORE, team: str | None = TEAM) -> None:
    """Download every file of a version and check its size and sha256 against the manifest
    (with --store also the checksums the store recorded at upload).

    Exit status 1 on any problem: missing manifest, missing file, or a size, sha256 or S3
    checksum that differs from the manifest.
    """
    with _source(store, team) as source:
        if _is_uri(ref):
            checked, count, problems = StoreSource.verify_manifest(_manifest_uri(ref, store))
        else:
            checked, count, problems = source.verify(*_ref(ref))
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        raise _fail(f"{checked}: {len(problems)} problem(s)")
    print(f"OK {checked}: {count} artifact(s) match the manifest")


@app.command()
def report(ref: str = typer.Argument(
               ..., help="NAME@VERSION or NAME@alias (with --store also a manifest URI)"),
           store: str | None = STORE, team: str | None = TEAM) -> None:
    """Print a version's held-out scores (mAP50, mAP50-95, per-class AP) and its files."""
    with _source(store, team) as source:
        detail, where = _version(source, ref, store)
    manifest = detail["manifest"]
    evaluation = manifest.get("evaluation", {})
    metrics = evaluation.get("metrics", manifest.get("metrics", {}))
    print(f"model {detail['name']}@{detail['version']}  ({evaluation.get('split', '?')} split)")
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
    print(f"files of {where}:")
    for file in detail["files"]:
        print(f"  {file['name']:<28} {file['size']:>12,d} B  sha256 {file['sha256'][:12]}…")


@app.command()
def pull(ref: str = typer.Argument(..., help="NAME@VERSION, NAME@alias or NAME@latest"),
         output: Path | None = typer.Option(
             None, "--output", "-o", file_okay=False,
             help="files: the folder (default ./NAME-VERSION); triton: the model repository "
             "root (default ./model_repository)"),
         only: list[str] = typer.Option(
             [], "--only", help=f"only these kinds ({', '.join(FILE_KINDS)}; repeatable); "
             "manifest.json always comes too"),
         layout: str = typer.Option(
             "files", "--layout", help="files, or triton: a Triton model repository "
             "(config.pbtxt and <n>/model.onnx, or <n>/model.plan with --gpu)"),
         gpu: str | None = typer.Option(
             None, "--gpu", help="triton: serve the TensorRT engine built for this GPU "
             "(nvidia-h100, or nvidia-h100-fp16 when it has several)"),
         triton_version: int | None = typer.Option(
             None, "--triton-version", min=1, help="triton: the version number (default: "
             "the one holding this version already, else the next)")) -> None:
    """Download a version's files through the API: each checked against the manifest's
    sha256, written atomically, and kept when already there (run it again to resume)."""
    if layout not in ("files", "triton"):
        raise _fail(f"error: --layout is files or triton, not {layout!r}")
    with Client() as client, _errors(), _bar() as on_progress:
        name, version = _ref(ref)
        dest = output or (Path("model_repository") if layout == "triton" else None)
        if dest is None:
            version = str(client.model_artifacts(name, version)["version"])
            dest = Path(f"{name}-{version}")
        pulled = client.pull_model(name, version, dest, only=only,
                                   layout="triton" if layout == "triton" else "files",
                                   gpu=gpu, triton_version=triton_version,
                                   on_progress=on_progress)
    kept = len(pulled.paths) - len(pulled.fetched) - (pulled.config is not None)
    print(f"pulled {name}@{pulled.version} into {dest}: {len(pulled.fetched)} file(s) "
          f"fetched, {kept} already there (sha256 checked)")
    for path in pulled.paths:
        print(f"  {path}")


@contextmanager
def _bar() -> Iterator[Any]:
    """A progress bar per file on stderr (a terminal's: none in a log); yields the
    ``on_progress`` callback."""
    columns = (TextColumn("{task.description:<32}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn())
    with Progress(*columns, console=stderr, transient=True,
                  disable=not stderr.is_terminal) as progress:
        tasks: dict[str, Any] = {}

        def on_progress(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=total)
            progress.update(tasks[name], completed=done)

        yield on_progress


def _score(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"
