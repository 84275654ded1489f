"""A synthetic shapes dataset that a YOLO model learns within minutes on a CPU.

Each image holds 1–4 filled shapes (one class per shape kind) on a textured background.
``variant`` changes the palette, the object sizes and the background so that two variants are
different-but-related domains (the fine-tuning benchmark trains on one, fine-tunes on another).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml
from PIL import Image, ImageDraw, ImageFilter

from trainforge.errors import DatasetError

SHAPES = ("square", "circle", "triangle", "diamond", "cross", "ring")


@dataclass(frozen=True)
class _Style:
    palette: tuple[tuple[int, int, int], ...]
    size: tuple[float, float]  # object side as a fraction of the image side
    background: tuple[int, int]  # grey range of the background noise


_STYLES = (
    _Style(((230, 60, 50), (50, 170, 70), (60, 90, 220), (240, 200, 40)), (0.18, 0.38), (30, 90)),
    _Style(((250, 130, 200), (120, 240, 240), (200, 120, 40), (150, 60, 200)), (0.12, 0.28),
           (120, 190)),
    _Style(((255, 255, 255), (255, 150, 0), (0, 200, 160), (180, 180, 0)), (0.25, 0.45),
           (0, 50)),
)


def synth(
    dest: str | Path,
    *,
    classes: int = 3,
    train: int = 128,
    val: int = 32,
    test: int = 32,
    imgsz: int = 128,
    seed: int = 0,
    variant: int = 0,
    image_format: str = "png",
) -> Path:
    """Write a YOLO-layout dataset (``data.yaml`` + images/ and labels/ per split) to ``dest``.

    Args:
        dest: an empty or missing directory.
        classes: number of shape classes (1–6).
        train, val, test: images per split (test may be 0: no test split).
        imgsz: image side in pixels.
        seed: makes the dataset reproducible.
        variant: palette/size/background style (0–2).
        image_format: "png" or "jpg".

    Returns:
        The dataset root.

    Raises:
        DatasetError: if dest is not empty or an argument is out of range.
    """
    root = Path(dest)
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"{root} is not empty; synth refuses to overwrite a dataset")
    if not 1 <= classes <= len(SHAPES):
        raise DatasetError(f"classes must be 1..{len(SHAPES)}, got {classes}")
    if train < 1 or val < 1 or test < 0:
        raise DatasetError("train and val need at least one image; test may be 0")
    if not 32 <= imgsz <= 2048:
        raise DatasetError("imgsz must be 32..2048")
    if image_format not in {"png", "jpg"}:
        raise DatasetError("image_format must be png or jpg")
    style = _STYLES[variant % len(_STYLES)]
    rng = random.Random(f"{seed}-{variant}")
    splits = {"train": train, "val": val, "test": test}
    for split, count in splits.items():
        if count == 0:
            continue
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            image, lines = _draw(rng, style, classes, imgsz)
            stem = f"{split}_{index:05d}"
            out = root / split / "images" / f"{stem}.{image_format}"
            if image_format == "jpg":
                image.save(out, quality=92)
            else:
                image.save(out)
            (root / split / "labels" / f"{stem}.txt").write_text("".join(lines))
    data = {
        "train": "train/images",
        "val": "val/images",
        **({"test": "test/images"} if test else {}),
        "nc": classes,
        "names": {i: SHAPES[i] for i in range(classes)},
    }
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root


def _draw(
    rng: random.Random, style: _Style, classes: int, imgsz: int
) -> tuple[Image.Image, list[str]]:
    low, high = style.background
    base = rng.randint(low, high)
    image = Image.new("RGB", (imgsz, imgsz), (base, base, base))
    draw = ImageDraw.Draw(image)
    # Background clutter: thin lines and speckles, so the model must learn shapes, not contrast.
    for _ in range(6):
        grey = rng.randint(low, high)
        draw.line(
            [(rng.uniform(0, imgsz), rng.uniform(0, imgsz)) for _ in range(2)],
            fill=(grey, grey, grey),
            width=1,
        )
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    draw = ImageDraw.Draw(image)
    boxes: list[tuple[float, float, float, float]] = []
    lines: list[str] = []
    for _ in range(rng.randint(1, 4)):
        cls = rng.randrange(classes)
        side = rng.uniform(*style.size) * imgsz
        for _attempt in range(20):
            x0 = rng.uniform(0, imgsz - side)
            y0 = rng.uniform(0, imgsz - side)
            box = (x0, y0, x0 + side, y0 + side)
            if all(_iou(box, other) < 0.05 for other in boxes):
                break
        else:
            continue
        boxes.append(box)
        color = style.palette[rng.randrange(len(style.palette))]
        _shape(draw, SHAPES[cls], box, color)
        cx, cy = (box[0] + box[2]) / 2 / imgsz, (box[1] + box[3]) / 2 / imgsz
        w = h = side / imgsz
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return image, lines


def _shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    box: tuple[float, float, float, float],
    color: tuple[int, int, int],
) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=color)
    elif shape == "cross":
        t = (x1 - x0) / 3
        draw.rectangle((x0, cy - t / 2, x1, cy + t / 2), fill=color)
        draw.rectangle((cx - t / 2, y0, cx + t / 2, y1), fill=color)
    else:  # ring
        t = max(2.0, (x1 - x0) / 5)
        draw.ellipse(box, outline=color, width=int(t))


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
