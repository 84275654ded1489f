"""Validation throughput on generated 640x480 JPEGs on local disk.

Prints images/s for labels + headers (decode=False) and for a full decode (decode=True), and the
ratio of each to the 1,000 images/s target, all measured in this one run.

    PYTHONPATH=. YOLO_OFFLINE=1 .venv/bin/python bench/validate.py [--images 2000] [--repeat 3]
                                                                  [--smoke]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _smoke import parse_args  # noqa: E402

from trainforge.datasets import validate  # noqa: E402

TARGET = 1000.0  # images/s, labels + headers

#: What a run prints for its figures (tests/bench/test_bench_smoke.py).
SMOKE_RATIO_LINES = (r"labels \+ headers .* images/s \(\d+\.\d\dx the 1000/s target\)",
                     r"full decode .* images/s \(\d+\.\d\dx the 1000/s target\)")
#: No training, no server: a few seconds, in the fast tier.
SMOKE_MARKS: tuple[str, ...] = ()


def _make_chunk(args: tuple[Path, int, int, int]) -> int:
    root, start, stop, seed = args
    rng = random.Random(seed + start)
    for i in range(start, stop):
        split = "train" if i % 10 else "val"
        image = Image.new("RGB", (640, 480), tuple(rng.randrange(40, 200) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        lines = []
        for _ in range(rng.randint(1, 6)):
            w, h = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3)
            cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
            cls = rng.randrange(4)
            draw.rectangle(((cx - w / 2) * 640, (cy - h / 2) * 480,
                            (cx + w / 2) * 640, (cy + h / 2) * 480),
                           fill=tuple(rng.randrange(256) for _ in range(3)))
            lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
        draw.text((10, 10), f"{i}", fill=(255, 255, 255))
        image.save(root / split / "images" / f"img_{i:06d}.jpg", quality=85)
        (root / split / "labels" / f"img_{i:06d}.txt").write_text("".join(lines))
    return stop - start


def make_dataset(root: Path, n: int, seed: int = 0) -> None:
    """n unique 640x480 JPEGs with 1-6 boxes each, 90 % train / 10 % val, 4 classes."""
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
    step = 100
    chunks = [(root, s, min(s + step, n), seed) for s in range(0, n, step)]
    with ProcessPoolExecutor(os.cpu_count() or 2) as pool:
        assert sum(pool.map(_make_chunk, chunks)) == n
    (root / "data.yaml").write_text(yaml.safe_dump(
        {"train": "train/images", "val": "val/images", "names": ["a", "b", "c", "d"]}))


def measure(root: Path, decode: bool, repeat: int, workers: int | None) -> tuple[float, int]:
    times = []
    images = 0
    for _ in range(repeat):
        started = time.perf_counter()
        report = validate(root, decode=decode, workers=workers)
        times.append(time.perf_counter() - started)
        images = sum(s.images for s in report.splits.values())
        if not report.ok:
            raise SystemExit(f"benchmark dataset is invalid:\n{report.format_text()}")
    return statistics.median(times), images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: validate's own")
    args = parse_args(parser, images=10, repeat=1)
    if not 10 <= args.images <= 20_000:
        raise SystemExit("--images must be 10..20000 (disk use is about 25 kB per image)")
    logging.basicConfig(level=logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="tf-bench-validate-"))
    try:
        started = time.perf_counter()
        make_dataset(tmp / "ds", args.images)
        size = sum(p.stat().st_size for p in (tmp / "ds").rglob("*") if p.is_file())
        print(f"generated {args.images} 640x480 JPEGs + labels ({size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - started:.1f}s; cpus={os.cpu_count()}")
        validate(tmp / "ds", decode=False)  # warm the page cache: measure CPU, not the disk
        for decode, label in ((False, "labels + headers"), (True, "full decode")):
            seconds, n = measure(tmp / "ds", decode, args.repeat, args.workers)
            rate = n / seconds
            print(f"{label:<17} {n} images in {seconds:.3f}s = {rate:8.0f} images/s "
                  f"({rate / TARGET:.2f}x the {TARGET:.0f}/s target)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
