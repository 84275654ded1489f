"""Image checks: header probe (size, format) without decoding, then an optional full decode.

Pillow parses only the header on ``Image.open``; pixel data is read on ``load()``. The
megapixel limit is enforced from the header, so a decompression bomb is refused unread.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

#: Extensions trainforge trains on (a subset of Ultralytics' IMG_FORMATS that Pillow decodes).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".mpo"})
#: Image files Ultralytics or cameras produce that trainforge refuses (convert them first).
UNSUPPORTED_IMAGE_EXTENSIONS = frozenset({
    ".gif", ".heic", ".heif", ".dng", ".pfm", ".avif", ".jxl", ".svg", ".ico", ".raw",
    ".cr2", ".nef", ".arw", ".jp2", ".ppm", ".pgm",
})
#: Pillow decoders allowed to open files (MPO is reached through the JPEG plugin).
PIL_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
MIN_SIDE = 10
MAX_PIXELS = 100_000_000
#: Bytes fetched from object storage to read a header; enough for JPEGs with EXIF thumbnails.
HEADER_BYTES = 64 * 1024

_MAGIC = (
    (b"GIF8", "GIF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
)


class ImageProblem(Exception):
    """Raised by the probes; carries a problem code and a message that says what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ImageHeader:
    width: int
    height: int
    format: str


def probe_header(source: Path | bytes | BinaryIO, *, partial: bool = False) -> ImageHeader:
    """Read an image's size and format from its header.

    Args:
        source: a local path, the file's bytes, or a readable binary file.
        partial: ``source`` is only the first bytes of the file; a failure may then mean
            "fetch more", which :class:`HeaderIncomplete` signals.

    Returns:
        The header.

    Raises:
        ImageProblem: unsupported format, corrupt header, too small or too large.
        HeaderIncomplete: ``partial`` and the header did not fit in the bytes given.
    """
    fp: Path | BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(fp, formats=PIL_FORMATS) as im:
            header = ImageHeader(int(im.width), int(im.height), str(im.format))
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels" if pixels else "its size"
        raise ImageProblem(
            "image_too_large",
            f"header declares {size}, over the {MAX_PIXELS // 1_000_000} MP limit (refused "
            "without decoding): downscale or tile the image",
        ) from None
    except UnidentifiedImageError:
        head = source[:16] if isinstance(source, bytes) else _peek(fp)
        if partial and len(head) == 0:
            raise HeaderIncomplete() from None
        raise ImageProblem("image_format_unsupported", _unsupported_message(head)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        if partial:
            raise HeaderIncomplete() from None
        raise ImageProblem("image_corrupt", f"header does not parse ({exc}): re-export it") \
            from None
    check_dimensions(header)
    return header


class HeaderIncomplete(Exception):
    """The bytes given ended before the header did (fetch the whole file and retry)."""


def check_dimensions(header: ImageHeader) -> None:
    """Raise ImageProblem if a side is under MIN_SIDE or the area over MAX_PIXELS."""
    w, h = header.width, header.height
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageProblem(
            "image_too_small",
            f"image is {w}x{h} px; each side must be at least {MIN_SIDE} px: remove it or use "
            "the original",
        )
    if w * h > MAX_PIXELS:
        raise ImageProblem(
            "image_too_large",
            f"image is {w}x{h} px ({w * h / 1e6:.0f} MP), over the {MAX_PIXELS // 1_000_000} MP "
            "limit (refused without decoding): downscale or tile it",
        )


def decode(data: bytes) -> ImageHeader:
    """Fully decode an image held in memory (after the header checks pass).

    Raises:
        ImageProblem: any header problem, or pixel data that does not decode.
    """
    header = probe_header(data)
    try:
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as im:
            im.load()
    except Image.DecompressionBombError:  # pragma: no cover - probe_header refused it first
        raise ImageProblem("image_too_large", "image is a decompression bomb") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        raise ImageProblem(
            "image_corrupt", f"pixel data does not decode ({exc}): re-export the image"
        ) from None
    if header.format in {"JPEG", "MPO"} and not data.endswith(b"\xff\xd9"):
        # Ultralytics "restores" such files by re-saving them in place; refuse instead so a
        # cached dataset is never rewritten behind its fingerprint.
        raise ImageProblem(
            "image_corrupt",
            "JPEG does not end with an end-of-image marker (truncated, or bytes appended): "
            "re-export the image",
        )
    return header


def _peek(fp: Path | BinaryIO) -> bytes:
    try:
        if isinstance(fp, Path):
            with fp.open("rb") as fh:
                return fh.read(16)
        fp.seek(0)
        return fp.read(16)
    except OSError:
        return b""


def _unsupported_message(head: bytes) -> str:
    kind = "an unknown format"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            kind = name
            break
    else:
        if head[4:8] == b"ftyp":
            kind = "HEIF/AVIF"
        elif not head:
            kind = "an empty file"
    if kind == "an empty file":
        return "file is empty: re-upload the image or delete it"
    return f"file is {kind}, not JPEG, PNG, BMP, TIFF or WebP: convert it to JPEG or PNG"
