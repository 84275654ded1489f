"""Problems and the validation report (what ``trainforge dataset validate`` prints).

Every problem has a stable ``code``; its severity comes from :data:`PROBLEM_CODES`, the one
table of codes (the docs and the tests read it too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]

#: code -> (severity, what it means). Errors make a dataset invalid; warnings and infos do not.
PROBLEM_CODES: dict[str, tuple[Severity, str]] = {
    # data.yaml
    "data_yaml_missing": ("error", "no data.yaml at the dataset root"),
    "data_yaml_ambiguous": ("error", "more than one dataset YAML at the root"),
    "data_yaml_invalid": ("error", "data.yaml is not a YAML mapping (or is too large)"),
    "data_yaml_download_ignored": ("warning", "a download: key is ignored (never executed)"),
    "data_yaml_path_ignored": ("warning", "a path: that is absolute or no folder inside the "
                                          "root is ignored; the URI is the root"),
    "data_yaml_path_invalid": ("error", "path: is not a string"),
    "data_yaml_names_missing": ("error", "data.yaml has no names"),
    "data_yaml_names_invalid": ("error", "names is not a list or a 0..n-1 mapping of strings"),
    "data_yaml_names_duplicate": ("warning", "two classes share a name"),
    "data_yaml_nc_mismatch": ("error", "nc disagrees with the number of names"),
    "data_yaml_unknown_key": ("warning", "a key trainforge does not use"),
    "split_missing": ("error", "train or val is not declared in data.yaml"),
    "split_path_invalid": ("error", "a split path is absolute, has '..', or is a URL"),
    "split_list_unsupported": ("error", "a split is a list or a .txt file list"),
    "split_dir_missing": ("error", "a declared split directory does not exist"),
    "split_empty": ("error", "train or val has no images"),
    "split_test_empty": ("warning", "the declared test split has no images"),
    # files
    "symlink_escape": ("error", "a symlink points outside the dataset root"),
    "unsafe_key": ("error", "an object key has empty, '.' or '..' segments"),
    "file_unreadable": ("error", "a local label or image cannot be read (permissions)"),
    "cache_file_ignored": ("warning", "labels.cache / pickle / .npy: never loaded, not synced"),
    # images
    "image_format_unsupported": ("error", "the image is in a format trainforge cannot read"),
    "image_corrupt": ("error", "the image does not decode"),
    "image_too_small": ("error", "an image side is under 10 px"),
    "image_too_large": ("error", "over 100 megapixels (refused from the header, not decoded)"),
    "image_no_label": ("warning", "images without a label file (trained as background)"),
    "image_duplicate": ("warning", "the same image bytes twice in one split"),
    "image_leak": ("warning", "the same image bytes in two splits"),
    "label_shared": ("warning", "two images map to one label file"),
    # labels
    "label_not_text": ("error", "the label file is not UTF-8 text"),
    "label_too_large": ("error", "the label file is over 10 MiB"),
    "label_field_count": ("error", "a label line does not have exactly 5 fields"),
    "label_class_not_integer": ("error", "a class id is not an integer"),
    "label_class_out_of_range": ("error", "a class id is not in 0..nc-1"),
    "label_coord_not_number": ("error", "a coordinate is not a number"),
    "label_coord_not_finite": ("error", "a coordinate is nan or inf"),
    "label_coord_out_of_range": ("error", "a coordinate is outside [0, 1]"),
    "label_box_empty": ("error", "a box has width or height <= 0"),
    "label_box_outside_image": ("error", "a box extends past the image border"),
    "label_duplicate_box": ("warning", "a label line repeats an earlier one"),
    "label_orphan": ("warning", "a label file without an image"),
    # classes
    "class_no_instances": ("warning", "a class has no instances in train or val"),
    "class_imbalance": ("warning", "most/least common class above 5:1 in train"),
    "class_few_instances": ("info", "a class has under 200 train instances"),
    "objects_small": ("info", "most boxes are small relative to the image"),
    "no_test_split": ("info", "no held-out test split"),
}

#: At most this many problems of one code are kept; the rest are counted in ``omitted``.
MAX_PER_CODE = 200

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``file`` is relative to the dataset root (None: the dataset as a whole)."""

    severity: Severity
    file: str | None
    line: int | None
    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "code": self.code,
            "message": self.message,
        }

    def format(self) -> str:
        """``ERROR train/labels/x.txt:3 [code] message``."""
        where = self.file or "."
        if self.line is not None:
            where += f":{self.line}"
        return f"{self.severity.upper()} {where} [{self.code}] {self.message}"


def problem(code: str, message: str, file: str | None = None, line: int | None = None) -> Problem:
    """A Problem whose severity comes from :data:`PROBLEM_CODES`."""
    severity, _ = PROBLEM_CODES[code]
    return Problem(severity, file, line, code, message)


@dataclass
class SplitSummary:
    """Counts for one split."""

    path: str
    images: int = 0
    labelled: int = 0
    backgrounds: int = 0  # empty label file: an intentional background image
    unlabelled: int = 0  # no label file at all (also trained as background)
    instances: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "images": self.images,
            "labelled": self.labelled,
            "backgrounds": self.backgrounds,
            "unlabelled": self.unlabelled,
            "instances": self.instances,
        }


@dataclass
class SizeSummary:
    """Image sizes (from headers) and box sizes (from labels) over the images read."""

    images: int = 0
    min_width: int | None = None
    min_height: int | None = None
    max_width: int | None = None
    max_height: int | None = None
    median_width: float | None = None
    median_height: float | None = None
    formats: dict[str, int] = field(default_factory=dict)
    common_sizes: dict[str, int] = field(default_factory=dict)  # "640x480" -> count, top 5
    boxes: int = 0
    median_box_area: float | None = None  # fraction of the image
    small_box_fraction: float | None = None  # boxes under 32x32 px at 640 (area < 0.25 %)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ValidationReport:
    """The outcome of :func:`trainforge.datasets.validate`."""

    uri: str
    decode: bool
    names: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    omitted: dict[str, int] = field(default_factory=dict)  # code -> problems not listed
    splits: dict[str, SplitSummary] = field(default_factory=dict)
    instances: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> n
    sizes: SizeSummary = field(default_factory=SizeSummary)
    duration_s: float = 0.0
    _kept: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings and infos allowed)."""
        return not self.errors and not any(
            PROBLEM_CODES[code][0] == "error" for code in self.omitted
        )

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def infos(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "info"]

    def codes(self) -> set[str]:
        """Every problem code found (listed or omitted)."""
        return {p.code for p in self.problems} | set(self.omitted)

    def add(self, item: Problem) -> None:
        """Record a problem, keeping at most MAX_PER_CODE of each code."""
        kept = self._kept.get(item.code, 0)
        if kept >= MAX_PER_CODE:
            self.omitted[item.code] = self.omitted.get(item.code, 0) + 1
        else:
            self._kept[item.code] = kept + 1
            self.problems.append(item)

    def sort(self) -> None:
        """Errors first, then by file and line: stable output for people and diffs."""
        self.problems.sort(
            key=lambda p: (_SEVERITY_ORDER[p.severity], p.file or "", p.line or 0, p.code)
        )

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.code] = counts.get(p.code, 0) + 1
        for code, n in self.omitted.items():
            counts[code] = counts.get(code, 0) + n
        return {
            "uri": self.uri,
            "ok": self.ok,
            "decode": self.decode,
            "names": list(self.names),
            "nc": len(self.names),
            "errors": sum(n for c, n in counts.items() if PROBLEM_CODES[c][0] == "error"),
            "warnings": sum(n for c, n in counts.items() if PROBLEM_CODES[c][0] == "warning"),
            "counts": dict(sorted(counts.items())),
            "omitted": dict(sorted(self.omitted.items())),
            "problems": [p.to_dict() for p in self.problems],
            "splits": {k: v.to_dict() for k, v in self.splits.items()},
            "instances": {k: dict(v) for k, v in self.instances.items()},
            "sizes": self.sizes.to_dict(),
            "duration_s": round(self.duration_s, 3),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def format_text(self) -> str:
        """One line per problem, then a summary (the CLI's human output)."""
        lines = [p.format() for p in self.problems]
        for code, n in sorted(self.omitted.items()):
            lines.append(f"{PROBLEM_CODES[code][0].upper()} . [{code}] … and {n} more like this")
        d = self.to_dict()
        verdict = "VALID" if self.ok else "INVALID"
        lines.append("")
        lines.append(
            f"{verdict}: {self.uri} — {d['errors']} error(s), {d['warnings']} warning(s); "
            f"{len(self.names)} classes: {', '.join(self.names) if self.names else '-'}"
        )
        for name, s in self.splits.items():
            lines.append(
                f"  {name:<5} {s.path}: {s.images} images ({s.labelled} labelled, "
                f"{s.backgrounds} empty-label backgrounds, {s.unlabelled} without labels), "
                f"{s.instances} boxes"
            )
            per_class = self.instances.get(name, {})
            if per_class:
                lines.append(
                    "        " + ", ".join(f"{c}={n}" for c, n in per_class.items())
                )
        z = self.sizes
        if z.images:
            lines.append(
                f"  images: {z.images} read, width {z.min_width}..{z.max_width} "
                f"(median {z.median_width:g}), height {z.min_height}..{z.max_height} "
                f"(median {z.median_height:g}); formats "
                + ", ".join(f"{k}={v}" for k, v in sorted(z.formats.items()))
            )
        if z.boxes and z.median_box_area is not None:
            lines.append(
                f"  boxes: median area {z.median_box_area:.2%} of the image, "
                f"{z.small_box_fraction or 0:.0%} small (< 32x32 px at 640)"
            )
        mode = "full decode" if self.decode else "labels + headers"
        lines.append(f"  checked in {self.duration_s:.2f}s ({mode})")
        return "\n".join(lines)
