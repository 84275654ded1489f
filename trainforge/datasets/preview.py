"""Draw the labelled boxes and class names on sample images, for a human to check alignment.

The tutorial's ``visualize_annotations`` with Pillow instead of OpenCV, for local or remote
datasets (only the sampled images are read). Out-of-range class ids are drawn with their number,
so a wrong label shows up instead of disappearing.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from trainforge.datasets import images as img
from trainforge.datasets._source import open_source
from trainforge.datasets.labels import parse_label_bytes
from trainforge.datasets.validate import label_for, read_config, split_images
from trainforge.errors import DatasetError

if TYPE_CHECKING:
    from PIL import ImageFont

log = logging.getLogger(__name__)

_COLORS = ((0, 255, 0), (255, 64, 64), (64, 128, 255), (255, 255, 0), (0, 255, 255),
           (255, 0, 255), (255, 160, 0), (160, 96, 255))
_THUMB = 256


def preview(
    uri_or_path: str | Path,
    out: str | Path,
    *,
    n: int = 16,
    split: str | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write ``n`` sample images with their boxes drawn, plus ``grid.jpg`` (all of them).

    Args:
        uri_or_path: the dataset root (local path, ``file://`` or ``s3://``).
        out: output folder (created); files are named after the image path, ``/`` -> ``__``.
        n: how many images (sampled with ``seed`` across the chosen splits).
        split: only this split (default: every split).
        seed: the sampling seed.

    Returns:
        The written previews (grid.jpg last).

    Raises:
        DatasetNotFound: nothing at the URI.
        DatasetError: data.yaml is unusable, the split is unknown, or n < 1.
    """
    if n < 1:
        raise DatasetError("n must be at least 1")
    source = open_source(uri_or_path)
    parsed, problems = read_config(source)
    if not parsed.splits:
        raise DatasetError("cannot preview: " + "; ".join(p.format() for p in problems
                                                         if p.severity == "error"))
    if split is not None and split not in parsed.splits:
        raise DatasetError(f"split {split!r} is not in data.yaml (have: "
                           f"{', '.join(parsed.splits)})")
    listing = source.listing()
    pool = [(s, rel) for s, d in parsed.splits.items() if split in (None, s)
            for rel in split_images(listing, d)]
    chosen = sorted(random.Random(seed).sample(pool, min(n, len(pool))))
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    from PIL import ImageFont  # FreeType loads only when previews are drawn

    font = ImageFont.load_default(size=14)
    written: list[Path] = []
    thumbs: list[Image.Image] = []
    for _split, rel in chosen:
        try:
            _, opened = img.open_checked(source.read(rel))  # refuses bombs before decoding
            image = opened.convert("RGB")
        except (img.ImageProblem, OSError, ValueError, SyntaxError) as exc:
            log.warning("preview: skipping %s: %s", rel, exc)
            continue
        label = label_for(rel)
        boxes = (parse_label_bytes(source.read(label), None, label).boxes
                 if label in listing.files else [])
        _draw(image, boxes, parsed.names, font)
        path = (dest / rel.replace("/", "__")).with_suffix(".jpg")
        image.save(path, quality=90)
        written.append(path)
        thumb = image.copy()
        thumb.thumbnail((_THUMB, _THUMB))
        thumbs.append(thumb)
    if thumbs:
        cols = min(4, len(thumbs))
        rows = (len(thumbs) + cols - 1) // cols
        grid = Image.new("RGB", (cols * _THUMB, rows * _THUMB), (32, 32, 32))
        for i, thumb in enumerate(thumbs):
            grid.paste(thumb, ((i % cols) * _THUMB, (i // cols) * _THUMB))
        grid.save(dest / "grid.jpg", quality=90)
        written.append(dest / "grid.jpg")
    return written


def _draw(
    image: Image.Image,
    boxes: list[tuple[int, float, float, float, float]],
    names: list[str],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
) -> None:
    draw = ImageDraw.Draw(image)
    w, h = image.size
    width = max(2, round(min(w, h) / 200))
    for cls, cx, cy, bw, bh in boxes:
        x1, y1 = (cx - bw / 2) * w, (cy - bh / 2) * h
        x2, y2 = (cx + bw / 2) * w, (cy + bh / 2) * h
        color = _COLORS[cls % len(_COLORS)]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = names[cls] if cls < len(names) else f"class {cls}?"
        left, top, right, bottom = draw.textbbox((x1, y1), text, font=font)
        ty = y1 - (bottom - top) - 4 if y1 - (bottom - top) - 4 >= 0 else y1
        draw.rectangle((x1, ty, x1 + right - left + 4, ty + bottom - top + 4), fill=color)
        draw.text((x1 + 2, ty + 2 - (top - y1)), text, fill=(0, 0, 0), font=font)
