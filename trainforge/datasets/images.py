"""Image checks: header probe (size, format) without decoding, then an optional full decode.

Pillow parses only the header when a file is opened; pixel data is read on ``load()``. The
megapixel limit is enforced from the header, so a decompression bomb is refused unread.

Files are opened through Pillow's plugin registry (``Image.OPEN``), not ``Image.open``:
Ultralytics replaces ``Image.open`` with a wrapper that, on an unidentified file, tries to
pip-install and load a HEIF plugin. A dataset must never make a process install anything.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageFile

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


class _NotThisFormat(Exception):
    """No allowed plugin recognises the file's first bytes."""


def _open(fp: BinaryIO, partial: bool) -> ImageFile.ImageFile:
    """Open with the first allowed plugin that accepts the prefix (header parsed, no pixels)."""
    if any(fmt not in Image.OPEN for fmt in PIL_FORMATS):
        Image.init()
    prefix = fp.read(16)
    for fmt in PIL_FORMATS:
        if fmt not in Image.OPEN:
            continue  # e.g. a Pillow build without WebP
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(prefix):
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, ValueError, OSError, EOFError,
                struct.error) as exc:
            if partial:
                raise HeaderIncomplete() from None
            raise ImageProblem(
                "image_corrupt", f"{fmt} header does not parse ({exc}): re-export the image"
            ) from None
    raise _NotThisFormat(prefix)


def probe_header(
    source: str | Path | bytes | BinaryIO, *, partial: bool = False
) -> ImageHeader:
    """Read an image's size and format from its header.

    Args:
        source: a local path, the file's bytes, or a readable, seekable binary file.
        partial: ``source`` is only the first bytes of the file; a header that does not parse
            then raises :class:`HeaderIncomplete` ("fetch the whole file and retry").

    Returns:
        The header.

    Raises:
        ImageProblem: unsupported format, corrupt header, too small or too large.
        HeaderIncomplete: ``partial`` and the header did not parse from the bytes given.
    """
    if isinstance(source, str | Path):
        with open(source, "rb") as fh:
            return probe_header(fh, partial=partial)
    fp: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        im = _open(fp, partial)
    except _NotThisFormat as exc:
        head = exc.args[0] if exc.args else b""
        raise ImageProblem("image_format_unsupported", _unsupported_message(head)) from None
    header = ImageHeader(int(im.width), int(im.height), str(im.format))
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


def open_checked(data: bytes) -> tuple[ImageHeader, ImageFile.ImageFile]:
    """Header-check an in-memory image and return it opened, pixels not yet decoded.

    Raises:
        ImageProblem: any header problem (format, size, megapixels).
    """
    header = probe_header(data)
    return header, _open(io.BytesIO(data), partial=False)


def decode(data: bytes) -> ImageHeader:
    """Fully decode an in-memory image, after the header checks pass.

    Raises:
        ImageProblem: any header problem, or pixel data that does not decode.
    """
    header, im = open_checked(data)
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError,
            struct.error) as exc:
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
