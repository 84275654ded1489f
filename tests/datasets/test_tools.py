"""split, stats, preview, synth, fingerprint and sync: the Python API and the CLI commands."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from trainforge.cli import app
from trainforge.datasets import (
    dataset_stats,
    fingerprint,
    preview,
    split_dataset,
    synth,
    validate,
)
from trainforge.errors import DatasetError, DatasetExists

runner = CliRunner()


def _flat(base: Path, dest: Path, *, with_png: bool = True) -> Path:
    """A flat images/ + labels/ folder (the tutorial's data/raw) from a split dataset."""
    (dest / "images").mkdir(parents=True)
    (dest / "labels").mkdir()
    for i, image in enumerate(sorted(base.glob("*/images/*.png"))):
        label = image.parent.parent / "labels" / f"{image.stem}.txt"
        stem = f"frame_{i:04d}"
        if with_png and i % 3 == 0:
            shutil.copy(image, dest / "images" / f"{stem}.png")
        else:
            Image.open(image).convert("RGB").save(dest / "images" / f"{stem}.jpg")
        if i != 4:  # one background image without a label file
            shutil.copy(label, dest / "labels" / f"{stem}.txt")
    (dest / "labels" / "classes.txt").write_text("square\ncircle\n")
    return dest


def _tutorial_split(source_dir: str, train_ratio: float, val_ratio: float) -> dict[str, list[str]]:
    """The tutorial's split_dataset selection logic, verbatim (without the copying)."""
    images = sorted(Path(source_dir, "images").glob("*.jpg"))
    images += sorted(Path(source_dir, "images").glob("*.png"))
    random.seed(42)  # reproducible split
    random.shuffle(images)
    n = len(images)
    n_train = int(n * train_ratio)
    n_val = int(n * val_ratio)
    return {"train": sorted(p.name for p in images[:n_train]),
            "val": sorted(p.name for p in images[n_train:n_train + n_val]),
            "test": sorted(p.name for p in images[n_train + n_val:])}


def test_split_matches_the_tutorial_and_validates(base_dataset: Path, tmp_path: Path) -> None:
    raw = _flat(base_dataset, tmp_path / "raw")
    result = split_dataset(raw, tmp_path / "out", train=0.6, val=0.2, seed=42)
    expected = _tutorial_split(str(raw), 0.6, 0.2)
    for split, names in expected.items():
        assert sorted(p.name for p in (tmp_path / "out" / split / "images").iterdir()) == names
        assert result.counts[split] == len(names)
    assert result.backgrounds == 1
    report = validate(tmp_path / "out")
    assert report.ok, report.format_text()
    assert report.names == ["square", "circle"]
    assert sum(s.unlabelled for s in report.splits.values()) == 1


def test_split_is_reproducible_and_refuses_to_overwrite(base_dataset: Path, tmp_path: Path) -> None:
    raw = _flat(base_dataset, tmp_path / "raw")
    split_dataset(raw, tmp_path / "a", seed=7, train=0.5, val=0.25)
    split_dataset(raw, tmp_path / "b", seed=7, train=0.5, val=0.25)
    split_dataset(raw, tmp_path / "c", seed=8, train=0.5, val=0.25)

    def listing(root: Path) -> list[str]:
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))

    assert listing(tmp_path / "a") == listing(tmp_path / "b")
    assert listing(tmp_path / "a") != listing(tmp_path / "c")
    with pytest.raises(DatasetExists):
        split_dataset(raw, tmp_path / "a")
    with pytest.raises(DatasetError, match="--train"):
        split_dataset(raw, tmp_path / "d", train=0.9, val=0.2)
    assert not (tmp_path / "d").exists()


def test_split_cli(base_dataset: Path, tmp_path: Path) -> None:
    raw = _flat(base_dataset, tmp_path / "raw")
    (raw / "labels" / "classes.txt").unlink()
    out = tmp_path / "out"
    no_names = runner.invoke(app, ["dataset", "split", str(raw), str(out)])
    assert no_names.exit_code == 2 and "--names" in no_names.output
    ok = runner.invoke(app, ["dataset", "split", str(raw), str(out), "--train", "0.8",
                             "--val", "0.1", "--seed", "42", "--names", "square,circle"])
    assert ok.exit_code == 0, ok.output
    assert "split complete: 8 train / 1 val / 2 test" in ok.output
    again = runner.invoke(app, ["dataset", "split", str(raw), str(out), "--names", "a,b"])
    assert again.exit_code == 2 and "never overwrites" in again.output


def test_stats(base_dataset: Path) -> None:
    stats = dataset_stats(base_dataset)
    report = validate(base_dataset)
    assert stats.instances == report.instances
    assert stats.instances["train"] == {"square": 6, "circle": 6}
    assert stats.sizes.common_sizes == {"32x32": 11}
    result = runner.invoke(app, ["dataset", "stats", str(base_dataset)])
    assert result.exit_code == 0, result.output
    assert "square" in result.output and "32x32" in result.output
    as_json = json.loads(runner.invoke(app, ["dataset", "stats", str(base_dataset),
                                             "--json"]).output)
    assert as_json["instances"]["val"] == stats.instances["val"]


def test_preview_draws_boxes_with_class_colours(tmp_path: Path) -> None:
    root = synth(tmp_path / "ds", classes=2, train=4, val=2, test=0, imgsz=160, seed=1)
    Image.new("RGB", (160, 160), (128, 128, 128)).save(root / "train/images/train_00000.png")
    (root / "train/labels/train_00000.txt").write_text("1 0.5 0.5 0.5 0.5\n")
    written = preview(root, tmp_path / "qa", n=6, split="train", seed=0)
    assert [p.name for p in written][-1] == "grid.jpg"
    assert len(written) == 5  # 4 train images + the grid
    drawn = Image.open(tmp_path / "qa" / "train__images__train_00000.jpg").convert("RGB")
    # Class 1's colour on the box's bottom edge (y = 0.75 * 160), not on the image beside it.
    r, g, b = drawn.getpixel((80, 119))  # type: ignore[misc]
    assert r > 160 and r - g > 60 and r - b > 60, (r, g, b)
    assert max(abs(c - 128) for c in drawn.getpixel((80, 90))) < 16  # type: ignore[union-attr]
    result = runner.invoke(app, ["dataset", "preview", str(root), "--out",
                                 str(tmp_path / "qa2"), "--n", "3"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "qa2").glob("*.jpg"))) == 4
    with pytest.raises(DatasetError, match="split 'nope'"):
        preview(root, tmp_path / "qa3", split="nope")


def test_synth_fingerprint_and_sync_commands(tmp_path: Path) -> None:
    made = runner.invoke(app, ["dataset", "synth", str(tmp_path / "ds"), "--classes", "2",
                               "--train", "4", "--val", "2", "--test", "0", "--imgsz", "32",
                               "--seed", "3", "--variant", "1"])
    assert made.exit_code == 0, made.output
    assert validate(tmp_path / "ds").ok
    again = runner.invoke(app, ["dataset", "synth", str(tmp_path / "ds")])
    assert again.exit_code == 2 and "not empty" in again.output
    printed = runner.invoke(app, ["dataset", "fingerprint", str(tmp_path / "ds")])
    assert printed.output.strip() == fingerprint(tmp_path / "ds")
    first = runner.invoke(app, ["dataset", "sync", str(tmp_path / "ds"), str(tmp_path / "c")])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ["dataset", "sync", str(tmp_path / "ds"), str(tmp_path / "c")])
    assert "0 downloaded (0 bytes)" in second.output
    assert Path(second.output.splitlines()[0]) == tmp_path / "c" / fingerprint(tmp_path / "ds")
