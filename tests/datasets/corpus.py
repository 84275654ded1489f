"""The broken-dataset corpus: one small mutation of a valid synthetic dataset per rule.

Each case names the problem code it must trigger and the file (and line, for labels) the
report must point at. ``also`` lists other codes the mutation legitimately causes.
"""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from trainforge.datasets import PROBLEM_CODES

#: synth(BASE_ARGS) is valid with no warnings (2 classes, every class in train and val).
BASE_ARGS: dict[str, Any] = {"classes": 2, "train": 6, "val": 3, "test": 2, "imgsz": 32,
                             "seed": 2}
IMG = "train/images/train_00001.png"
LBL = "train/labels/train_00001.txt"
GOOD = "0 0.5 0.5 0.2 0.2\n"


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Path], None]
    code: str
    file: str | None
    line: int | None = None
    also: frozenset[str] = frozenset()
    local_only: bool = False  # symlinks have no object-store equivalent
    needs_decode: bool = False  # only a full decode finds it

    @property
    def severity(self) -> str:
        return PROBLEM_CODES[self.code][0]


def _yaml(root: Path, drop: tuple[str, ...] = (), **changes: Any) -> None:
    path = root / "data.yaml"
    doc = yaml.safe_load(path.read_text())
    for key in drop:
        doc.pop(key, None)
    doc.update(changes)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _append_yaml(root: Path, text: str) -> None:
    with (root / "data.yaml").open("a") as fh:
        fh.write(text)


def _label(text: str | bytes, rel: str = LBL) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        data = text.encode() if isinstance(text, str) else text
        (root / rel).write_bytes(data)

    return mutate


def _bad_line(line: str) -> Callable[[Path], None]:
    """A label file whose line 2 is ``line`` (line 1 is a good box)."""
    return _label(GOOD + line + "\n")


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with a tiny (invalid) IDAT: never decodable."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _image_bytes(fmt: str, size: tuple[int, int] = (32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def _write(rel: str, data: bytes) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    return mutate


def _truncated_png(root: Path) -> None:
    data = (root / IMG).read_bytes()
    (root / IMG).write_bytes(data[: len(data) // 2])


def _jpeg_without_eoi(root: Path) -> None:
    (root / IMG).unlink()
    data = _image_bytes("JPEG")
    assert data.endswith(b"\xff\xd9")
    (root / IMG.replace(".png", ".jpg")).write_bytes(data[:-2])


def _unlink(rel: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        (root / rel).unlink()

    return mutate


def _empty_split(split: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        for sub in ("images", "labels"):
            shutil.rmtree(root / split / sub)
            (root / split / sub).mkdir()
        # A non-image file keeps the folder visible in object storage (no empty "dirs" there).
        (root / split / "images" / "README.md").write_text("images go here\n")

    return mutate


def _outside(root: Path) -> Path:
    """A folder beside the dataset root (outside it)."""
    out = root.parent / f"{root.name}-outside"
    out.mkdir(exist_ok=True)
    return out


def _symlink_image(root: Path) -> None:
    target = _outside(root) / "secret.png"
    target.write_bytes(_image_bytes("PNG"))
    (root / IMG).unlink()
    (root / IMG).symlink_to(target)


def _symlink_split(root: Path) -> None:
    target = _outside(root) / "val"
    shutil.copytree(root / "val", target)
    shutil.rmtree(root / "val")
    (root / "val").symlink_to(target, target_is_directory=True)


def _path_escape(root: Path) -> None:
    _yaml(root, path="../elsewhere")


def _split_list(root: Path) -> None:
    (root / "train.txt").write_text("./train/images/train_00000.png\n")
    _yaml(root, train="train.txt")


class _Planted:
    """Unpickling this would write a file: the label cache must never be loaded."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (Path(self.target), "unpickled"))


def planted_pickle(sentinel: Path) -> bytes:
    return pickle.dumps(_Planted(str(sentinel)))


def _plant_cache(root: Path) -> None:
    (root / "train" / "labels.cache").write_bytes(
        planted_pickle(root.parent / f"{root.name}-UNPICKLED"))


def _imbalance(root: Path) -> None:
    labels = sorted((root / "train" / "labels").glob("*.txt"))
    rows = [f"0 {0.1 + 0.1 * i:.2f} 0.5 0.05 0.05" for i in range(8)]
    for i, path in enumerate(labels):
        path.write_text("1 0.5 0.9 0.1 0.1\n" if i == 0 else "\n".join(rows) + "\n")


def _val_one_class(root: Path) -> None:
    for path in (root / "val" / "labels").glob("*.txt"):
        path.write_text(GOOD)


def _copy(src: str, dst: str) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        shutil.copy(root / src, root / dst)
        src_label = root / src.replace("/images/", "/labels/").rsplit(".", 1)[0]
        dst_label = root / dst.replace("/images/", "/labels/").rsplit(".", 1)[0]
        shutil.copy(src_label.with_suffix(".txt"), dst_label.with_suffix(".txt"))

    return mutate


def _shared_label(root: Path) -> None:
    (root / IMG.replace(".png", ".jpg")).write_bytes(_image_bytes("JPEG"))


E = frozenset
CASES: list[Case] = [
    # --- data.yaml -------------------------------------------------------------------------
    Case("yaml_missing", _unlink("data.yaml"), "data_yaml_missing", None),
    Case("yaml_ambiguous", lambda r: shutil.copy(r / "data.yaml", r / "dataset.yaml"),
         "data_yaml_ambiguous", "dataset.yaml"),
    Case("yaml_syntax", _write("data.yaml", b"train: [train/images\nval: val/images\n"),
         "data_yaml_invalid", "data.yaml"),
    Case("yaml_not_mapping", _write("data.yaml", b"- train\n- val\n"),
         "data_yaml_invalid", "data.yaml"),
    Case("names_missing", lambda r: _yaml(r, drop=("names",)), "data_yaml_names_missing",
         "data.yaml"),
    Case("names_gap", lambda r: _yaml(r, names={0: "square", 2: "circle"}, drop=("nc",)),
         "data_yaml_names_invalid", "data.yaml"),
    Case("names_boolean", lambda r: _yaml(r, names=["square", True]),
         "data_yaml_names_invalid", "data.yaml"),
    Case("nc_mismatch", lambda r: _yaml(r, nc=3), "data_yaml_nc_mismatch", "data.yaml", 4),
    Case("path_not_a_string", lambda r: _yaml(r, path=["a", "b"]), "data_yaml_path_invalid",
         "data.yaml", 8),
    Case("split_missing", lambda r: _yaml(r, drop=("val",)), "split_missing", "data.yaml"),
    Case("split_dotdot", lambda r: _yaml(r, train="../../etc/images"), "split_path_invalid",
         "data.yaml", 1),
    Case("split_absolute", lambda r: _yaml(r, val="/srv/data/val/images"),
         "split_path_invalid", "data.yaml", 2),
    Case("split_url", lambda r: _yaml(r, val="https://example.com/val.zip"),
         "split_path_invalid", "data.yaml", 2),
    Case("split_file_list", _split_list, "split_list_unsupported", "data.yaml", 1),
    Case("split_dir_missing", lambda r: _yaml(r, val="nowhere/images"), "split_dir_missing",
         "data.yaml", 2),
    Case("split_empty", _empty_split("val"), "split_empty", "val/images",
         also=E({"class_no_instances"})),
    # --- files -------------------------------------------------------------------------------
    Case("symlink_image", _symlink_image, "symlink_escape", IMG, also=E({"image_no_label"}),
         local_only=True),
    Case("symlink_split", _symlink_split, "symlink_escape", "val", local_only=True),
    # --- images ------------------------------------------------------------------------------
    Case("image_truncated", _truncated_png, "image_corrupt", IMG, needs_decode=True),
    Case("jpeg_no_eoi", _jpeg_without_eoi, "image_corrupt", IMG.replace(".png", ".jpg"),
         needs_decode=True),
    Case("image_gif_content", _write(IMG, _image_bytes("GIF")), "image_format_unsupported",
         IMG),
    Case("image_gif_extension", _write("train/images/extra.gif", _image_bytes("GIF")),
         "image_format_unsupported", "train/images/extra.gif"),
    Case("image_garbage", _write(IMG, b"this is not an image at all" * 10),
         "image_format_unsupported", IMG),
    Case("image_empty_file", _write(IMG, b""), "image_format_unsupported", IMG),
    Case("image_too_small", _write(IMG, _image_bytes("PNG", (8, 8))), "image_too_small", IMG),
    Case("image_over_100mp", _write(IMG, png_header(12_000, 9_000)), "image_too_large", IMG),
    Case("image_bomb", _write(IMG, png_header(40_000, 40_000)), "image_too_large", IMG),
    # --- labels ------------------------------------------------------------------------------
    Case("label_fields", _bad_line("0 0.5 0.5 0.2"), "label_field_count", LBL, 2),
    Case("label_polygon", _bad_line("0 0.1 0.1 0.9 0.1 0.5 0.9"), "label_field_count", LBL, 2),
    Case("label_class_float", _bad_line("1.0 0.5 0.5 0.2 0.2"), "label_class_not_integer",
         LBL, 2),
    Case("label_class_out_of_range", _bad_line("7 0.5 0.5 0.2 0.2"),
         "label_class_out_of_range", LBL, 2),
    Case("label_class_negative", _bad_line("-1 0.5 0.5 0.2 0.2"), "label_class_out_of_range",
         LBL, 2),
    Case("label_coord_text", _bad_line("0 abc 0.5 0.2 0.2"), "label_coord_not_number", LBL, 2),
    Case("label_coord_nan", _bad_line("0 0.5 nan 0.2 0.2"), "label_coord_not_finite", LBL, 2),
    Case("label_coord_inf", _bad_line("0 0.5 0.5 inf 0.2"), "label_coord_not_finite", LBL, 2),
    Case("label_pixels", _bad_line("0 120 80 30 20"), "label_coord_out_of_range", LBL, 2),
    Case("label_negative_coord", _bad_line("0 -0.1 0.5 0.2 0.2"), "label_coord_out_of_range",
         LBL, 2),
    Case("label_zero_width", _bad_line("0 0.5 0.5 0 0.2"), "label_box_empty", LBL, 2),
    Case("label_outside", _bad_line("0 0.95 0.5 0.2 0.2"), "label_box_outside_image", LBL, 2),
    Case("label_binary", _label(b"0 0.5 0.5 0.2 0.2\n\xff\xfe\x00\x01\n"), "label_not_text",
         LBL, 2),
    Case("label_bom", _label(b"\xef\xbb\xbf" + GOOD.encode()), "label_not_text", LBL, 1),
    # --- warnings ----------------------------------------------------------------------------
    Case("duplicate_box", _label(GOOD + "1 0.2 0.2 0.1 0.1\n" + GOOD), "label_duplicate_box",
         LBL, 3),
    Case("image_no_label", _unlink(LBL), "image_no_label", IMG),
    Case("label_orphan", _write("train/labels/ghost.txt", GOOD.encode()), "label_orphan",
         "train/labels/ghost.txt"),
    Case("class_missing_in_val", _val_one_class, "class_no_instances", "data.yaml"),
    Case("class_imbalance", _imbalance, "class_imbalance", "data.yaml"),
    Case("absolute_path_ignored", lambda r: _yaml(r, path="/home/me/projects/ppe/dataset"),
         "data_yaml_path_ignored", "data.yaml", 8),
    # A stock Ultralytics data.yaml: path: relative to Ultralytics' own datasets folder, and a
    # download: key. Both ignored (the download never run), the dataset valid.
    Case("path_escape_ignored", _path_escape, "data_yaml_path_ignored", "data.yaml", 8),
    Case("relative_path_not_in_root", lambda r: _yaml(r, path="coco8"),
         "data_yaml_path_ignored", "data.yaml", 8),
    Case("yaml_download", lambda r: _append_yaml(r, "download: bash get_data.sh\n"),
         "data_yaml_download_ignored", "data.yaml", 8),
    Case("label_cache_planted", _plant_cache, "cache_file_ignored", "train/labels.cache"),
    Case("image_leak", _copy("train/images/train_00000.png", "val/images/copied.png"),
         "image_leak", "val/images/copied.png"),
    Case("image_duplicate", _copy("train/images/train_00000.png", "train/images/zz_copy.png"),
         "image_duplicate", "train/images/zz_copy.png"),
    Case("unknown_key", lambda r: _append_yaml(r, "kpt_shape: [17, 3]\n"),
         "data_yaml_unknown_key", "data.yaml", 8),
    Case("names_duplicate", lambda r: _yaml(r, names=["square", "square"]),
         "data_yaml_names_duplicate", "data.yaml"),
    Case("test_empty", _empty_split("test"), "split_test_empty", "test/images"),
    Case("shared_label", _shared_label, "label_shared", IMG),
]
