"""The YOLO detection label parser: one ``class x_center y_center width height`` per line.

Strict where Ultralytics is lenient: it drops bad lines or whole images with a warning; here
every rule that fails becomes a problem naming the line and what to change.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from trainforge.datasets.report import Problem, problem

#: Coordinates may overshoot [0, 1] by this much (float printing round-off).
TOLERANCE = 1e-6
#: Label files above this size are refused unread (a box per line is ~40 bytes).
MAX_LABEL_BYTES = 10 * 1024 * 1024

_INT = re.compile(r"-?[0-9]+")
_FIELDS = ("x_center", "y_center", "width", "height")

Box = tuple[int, float, float, float, float]


@dataclass
class ParsedLabels:
    """Boxes of the valid lines and every problem found (with 1-based line numbers)."""

    file: str
    boxes: list[Box] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no line has an error (duplicate boxes are only a warning)."""
        return not any(p.severity == "error" for p in self.problems)


def parse_label_bytes(data: bytes, nc: int | None, file: str = "") -> ParsedLabels:
    """Decode a label file (UTF-8, no BOM) and parse it.

    Args:
        data: the raw file content.
        nc: number of classes; None skips the class-range rule (names were unusable).
        file: the file's path relative to the dataset root, used in problems.

    Returns:
        The parsed boxes and problems; never raises on bad content.
    """
    result = ParsedLabels(file)
    if len(data) > MAX_LABEL_BYTES:
        result.problems.append(problem(
            "label_too_large",
            f"label file is larger than {MAX_LABEL_BYTES} bytes: is this really a YOLO label "
            "file? Split it or remove it",
            file,
        ))
        return result
    if data.startswith(b"\xef\xbb\xbf"):
        result.problems.append(problem(
            "label_not_text",
            "file starts with a UTF-8 byte-order mark that YOLO readers choke on: save it as "
            "UTF-8 without BOM",
            file, 1,
        ))
        return result
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        result.problems.append(problem(
            "label_not_text",
            f"byte {exc.start} is not UTF-8 text: label files are plain text, one box per line",
            file, line,
        ))
        return result
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        result.problems.append(problem(
            "label_not_text", "file contains NUL bytes: it is binary, not a label file",
            file, line,
        ))
        return result
    return parse_label_text(text, nc, file)


def parse_label_text(text: str, nc: int | None, file: str = "") -> ParsedLabels:
    """Parse label text. Blank lines are allowed; every other line must hold a valid box.

    Args:
        text: the decoded file content.
        nc: number of classes; None skips the class-range rule.
        file: the file's path relative to the dataset root, used in problems.

    Returns:
        The parsed boxes (valid lines only) and problems; never raises on bad content.
    """
    result = ParsedLabels(file)
    seen: dict[Box, int] = {}
    # str.splitlines would also split on \x0b, \x1c… which no label writer emits.
    for number, raw in enumerate(text.split("\n"), start=1):
        fields = raw.split()
        if not fields:
            continue
        box = _parse_line(fields, nc, file, number, result.problems)
        if box is None:
            continue
        first = seen.get(box)
        if first is not None:
            result.problems.append(problem(
                "label_duplicate_box",
                f"repeats line {first} exactly: remove the duplicate box",
                file, number,
            ))
            continue
        seen[box] = number
        result.boxes.append(box)
    return result


_LOW, _HIGH = -TOLERANCE, 1 + TOLERANCE


def _parse_line(
    fields: list[str], nc: int | None, file: str, number: int, out: list[Problem]
) -> Box | None:
    # Fast path for the common, valid line; anything unusual is diagnosed by the slow path.
    if len(fields) == 5:
        c, xs, ys, ws, hs = fields
        if c.isdigit() and c.isascii() and (nc is None or int(c) < nc):
            try:
                x, y, w, h = float(xs), float(ys), float(ws), float(hs)
            except ValueError:
                pass
            else:
                # NaN fails every comparison and inf fails the range: both take the slow path.
                if (w > 0 and h > 0 and _LOW <= x - w / 2 and x + w / 2 <= _HIGH
                        and _LOW <= y - h / 2 and y + h / 2 <= _HIGH
                        and _LOW <= x <= _HIGH and _LOW <= y <= _HIGH
                        and w <= _HIGH and h <= _HIGH):
                    return (int(c), x, y, w, h)
    return _diagnose_line(fields, nc, file, number, out)


def _diagnose_line(
    fields: list[str], nc: int | None, file: str, number: int, out: list[Problem]
) -> Box | None:
    if len(fields) != 5:
        hint = (
            " (this looks like a segmentation polygon: trainforge trains detectors, convert "
            "it to its bounding box)"
            if len(fields) > 5 and len(fields) % 2 == 1
            else ""
        )
        out.append(problem(
            "label_field_count",
            f"line has {len(fields)} field(s), expected 5: write `class x_center y_center "
            f"width height`{hint}",
            file, number,
        ))
        return None
    ok = True
    cls = -1
    token = fields[0]
    if not _INT.fullmatch(token):
        out.append(problem(
            "label_class_not_integer",
            f"class id {token!r} is not an integer: write the zero-based index of the class "
            "in names",
            file, number,
        ))
        ok = False
    else:
        cls = int(token)
        if cls < 0 or (nc is not None and cls >= nc):
            span = f"0..{nc - 1}" if nc else "0..nc-1"
            out.append(problem(
                "label_class_out_of_range",
                f"class {cls} is not in {span} (nc={nc if nc is not None else '?'}): fix the "
                "class id or add the class to names",
                file, number,
            ))
            ok = False
    values = _parse_coords(fields[1:], file, number, out)
    if values is None or not ok:
        return None
    return (cls, *values)


def _parse_coords(
    tokens: list[str], file: str, number: int, out: list[Problem]
) -> tuple[float, float, float, float] | None:
    values: list[float] = []
    for name, token in zip(_FIELDS, tokens, strict=True):
        try:
            value = float(token)
        except ValueError:
            out.append(problem(
                "label_coord_not_number",
                f"{name} {token!r} is not a number: write normalized coordinates in [0, 1]",
                file, number,
            ))
            return None
        if not math.isfinite(value):
            out.append(problem(
                "label_coord_not_finite",
                f"{name} is {token}: write a finite normalized value in [0, 1]",
                file, number,
            ))
            return None
        if not -TOLERANCE <= value <= 1 + TOLERANCE:
            out.append(problem(
                "label_coord_out_of_range",
                f"{name} {token} is outside [0, 1]: coordinates are normalized (divide pixel "
                "values by the image width or height)",
                file, number,
            ))
            return None
        values.append(value)
    x, y, w, h = values
    for name, value in (("width", w), ("height", h)):
        if value <= 0:
            out.append(problem(
                "label_box_empty",
                f"{name} {value:g} must be > 0: remove the line or draw the box again",
                file, number,
            ))
            return None
    for axis, centre, extent in (("x", x, w), ("y", y, h)):
        low, high = centre - extent / 2, centre + extent / 2
        if low < -TOLERANCE or high > 1 + TOLERANCE:
            out.append(problem(
                "label_box_outside_image",
                f"box spans {axis} {low:.6g}..{high:.6g}, past the image border [0, 1]: clip "
                "the box to the image (centre ± half the size must stay inside)",
                file, number,
            ))
            return None
    return x, y, w, h
