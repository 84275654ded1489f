"""``trainforge dataset …``: validate, split, stats, preview, synth, fingerprint, sync.

Exit codes: 0 ok (validate: valid, maybe with warnings), 1 the dataset is invalid, 2 the command
could not run as asked (bad option, nothing at the URI, storage unreachable).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NoReturn

import typer

app = typer.Typer(help="Check, split, inspect and cache YOLO datasets.", no_args_is_help=True)

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _fail(exc: Exception) -> NoReturn:
    from trainforge.errors import TrainforgeError

    code = exc.code if isinstance(exc, TrainforgeError) else type(exc).__name__
    print(f"error [{code}]: {exc}", file=sys.stderr)
    raise typer.Exit(EXIT_USAGE)


@app.command()
def validate(
    uri: str = typer.Argument(..., help="Dataset root: a path, file:// or s3:// URI."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
    decode: bool | None = typer.Option(
        None, "--decode/--no-decode",
        help="Fully decode every image. Default: decode local datasets; for s3:// read only "
             "labels and image headers (ranged GETs).",
    ),
    workers: int | None = typer.Option(None, min=1, max=128, help="Reader threads."),
) -> None:
    """Check every file of a YOLO dataset; exit 0 valid, 1 invalid, 2 usage error."""
    from trainforge.datasets import validate as run_validate
    from trainforge.errors import TrainforgeError

    use_decode = decode if decode is not None else not uri.startswith("s3://")
    try:
        report = run_validate(uri, decode=use_decode, workers=workers)
    except TrainforgeError as exc:
        _fail(exc)
    print(report.to_json() if as_json else report.format_text())
    raise typer.Exit(EXIT_OK if report.ok else EXIT_INVALID)


@app.command()
def stats(
    uri: str = typer.Argument(..., help="Dataset root: a path, file:// or s3:// URI."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Instances per class per split, image sizes and box sizes (reads headers only)."""
    from trainforge.datasets import dataset_stats
    from trainforge.errors import TrainforgeError

    try:
        result = dataset_stats(uri)
    except TrainforgeError as exc:
        _fail(exc)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    names = result.names
    width = max([len(n) for n in names] + [5])
    splits = list(result.splits)
    print(f"{result.uri}: {len(names)} classes")
    print(f"{'class':<{width}}  " + "  ".join(f"{s:>8}" for s in splits))
    for name in names:
        print(f"{name:<{width}}  "
              + "  ".join(f"{result.instances[s].get(name, 0):>8}" for s in splits))
    print(f"{'images':<{width}}  " + "  ".join(f"{result.splits[s].images:>8}" for s in splits))
    print(f"{'no label':<{width}}  "
          + "  ".join(f"{result.splits[s].unlabelled:>8}" for s in splits))
    z = result.sizes
    if z.images:
        print(f"image sizes: {z.min_width}x{z.min_height} .. {z.max_width}x{z.max_height}, "
              f"median {z.median_width:g}x{z.median_height:g}; most common: "
              + ", ".join(f"{k} ({v})" for k, v in z.common_sizes.items()))
    if z.boxes and z.median_box_area is not None:
        print(f"train boxes: {z.boxes}, median area {z.median_box_area:.2%} of the image, "
              f"{z.small_box_fraction or 0:.0%} under 32x32 px at 640")


@app.command()
def split(
    src: Path = typer.Argument(..., help="Folder with images/ and labels/."),
    dst: Path = typer.Argument(..., help="New folder for train/, val/, test/ and data.yaml."),
    train: float = typer.Option(0.8, help="Fraction of images for train."),
    val: float = typer.Option(0.1, help="Fraction for val (the rest is test)."),
    seed: int = typer.Option(42, help="Shuffle seed (the same seed gives the same split)."),
    names: str | None = typer.Option(
        None, help="Class names, comma-separated in class-id order (default: SRC/data.yaml "
                   "or classes.txt)."),
) -> None:
    """Split a flat dataset into train/val/test reproducibly; never overwrites."""
    from trainforge.datasets import split_dataset
    from trainforge.errors import TrainforgeError

    name_list = [n.strip() for n in names.split(",")] if names else None
    try:
        result = split_dataset(src, dst, train=train, val=val, seed=seed, names=name_list)
    except TrainforgeError as exc:
        _fail(exc)
    c = result.counts
    print(f"split complete: {c['train']} train / {c['val']} val / {c['test']} test -> "
          f"{result.path}")
    if result.backgrounds:
        print(f"note: {result.backgrounds} image(s) had no label file (copied as background)")
    if result.orphan_labels:
        print(f"note: {len(result.orphan_labels)} label file(s) had no image and were not "
              f"copied (e.g. {', '.join(result.orphan_labels[:3])})")


@app.command()
def preview(
    uri: str = typer.Argument(..., help="Dataset root: a path, file:// or s3:// URI."),
    out: Path = typer.Option(..., "--out", help="Folder for the annotated images."),
    n: int = typer.Option(16, "--n", min=1, max=1000, help="How many images."),
    split_name: str | None = typer.Option(None, "--split", help="Only this split."),
    seed: int = typer.Option(0, help="Sampling seed."),
) -> None:
    """Draw labelled boxes and class names on sample images (annotation QA)."""
    from trainforge.datasets import preview as run_preview
    from trainforge.errors import TrainforgeError

    try:
        written = run_preview(uri, out, n=n, split=split_name, seed=seed)
    except TrainforgeError as exc:
        _fail(exc)
    print(f"wrote {len(written)} file(s) to {out}" + (" (grid.jpg: all at once)" if written
                                                     else ""))


@app.command()
def synth(
    dst: Path = typer.Argument(..., help="A missing or empty folder."),
    classes: int = typer.Option(3, min=1, max=6),
    train: int = typer.Option(128, min=1),
    val: int = typer.Option(32, min=1),
    test: int = typer.Option(32, min=0),
    imgsz: int = typer.Option(128, min=32, max=2048),
    seed: int = typer.Option(0),
    variant: int = typer.Option(0, min=0, max=2),
    image_format: str = typer.Option("png", "--format", help="png or jpg."),
) -> None:
    """Generate a synthetic shapes dataset (learnable in minutes on a CPU)."""
    from trainforge.datasets import synth as run_synth
    from trainforge.errors import TrainforgeError

    try:
        root = run_synth(dst, classes=classes, train=train, val=val, test=test, imgsz=imgsz,
                         seed=seed, variant=variant, image_format=image_format)
    except TrainforgeError as exc:
        _fail(exc)
    print(root)
    # A JSON string is a YAML scalar: the line pastes into a job spec whatever the path holds.
    print(f"dataset: {{uri: {json.dumps(f'file://{root.resolve()}/')}}}   # for a job spec")


@app.command()
def fingerprint(
    uri: str = typer.Argument(..., help="Dataset root: a path, file:// or s3:// URI."),
) -> None:
    """Print the dataset's content fingerprint (names this version of the data)."""
    from trainforge.datasets import fingerprint as run_fingerprint
    from trainforge.errors import TrainforgeError

    try:
        print(run_fingerprint(uri))
    except TrainforgeError as exc:
        _fail(exc)


@app.command()
def sync(
    uri: str = typer.Argument(..., help="Dataset root: a path, file:// or s3:// URI."),
    cache_dir: Path | None = typer.Argument(
        None, help="Cache root (default: TRAINFORGE_DATASET_CACHE or $TRAINFORGE_HOME/cache/"
                   "datasets)."),
    workers: int = typer.Option(16, min=1, max=128, help="Parallel downloads."),
) -> None:
    """Copy a dataset into CACHE_DIR/<fingerprint>/, downloading only what is missing."""
    from trainforge.datasets import sync as run_sync
    from trainforge.errors import TrainforgeError
    from trainforge.settings import get_common_settings

    target = cache_dir or get_common_settings().resolved_dataset_cache
    try:
        result = run_sync(uri, target, workers=workers)
    except TrainforgeError as exc:
        _fail(exc)
    print(result.path)
    print(f"fingerprint {result.fingerprint}: {result.files_total} files, "
          f"{result.files_downloaded} downloaded ({result.bytes_downloaded} bytes), "
          f"{result.files_reused} reused from other versions", file=sys.stderr)
