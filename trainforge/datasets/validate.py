"""Strict dataset validation: every rule, every file, before any GPU time is spent.

One listing of the dataset, one parse of data.yaml, then labels and image headers are read in
a thread pool (object storage: one small GET per label and one ranged GET per image header;
full downloads only with ``decode=True``).
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from trainforge.datasets import images as img
from trainforge.datasets._source import (
    Listing,
    LocalSource,
    StoreSource,
    is_excluded,
    open_source,
    suffix,
)
from trainforge.datasets.config import (
    MAX_DATA_YAML_BYTES,
    DirStatus,
    ParsedConfig,
    find_yaml,
    parse_config,
)
from trainforge.datasets.labels import MAX_LABEL_BYTES, parse_label_bytes
from trainforge.datasets.report import (
    Problem,
    SizeSummary,
    SplitSummary,
    ValidationReport,
    problem,
)

log = logging.getLogger(__name__)

#: The tutorial's rule: at most 5:1 between the most and the least common class.
MAX_IMBALANCE = 5.0
#: The tutorial's "minimum viable" images per class.
MIN_IMAGES_PER_CLASS = 200
#: A box under 32x32 px at imgsz 640 covers less than this fraction of the image.
SMALL_BOX_AREA = (32 / 640) ** 2


@dataclass(frozen=True, slots=True)
class _Item:
    split: str
    image: str
    label: str | None  # None: no label file


@dataclass
class _Result:
    item: _Item
    header: img.ImageHeader | None = None
    problems: list[Problem] = field(default_factory=list)
    boxes: list[tuple[int, float]] = field(default_factory=list)  # (class, area)
    label_empty: bool = False
    digest: bytes | None = None


def validate(
    uri_or_path: str | Path, *, decode: bool = True, workers: int | None = None
) -> ValidationReport:
    """Check a YOLO detection dataset against every trainforge rule.

    Args:
        uri_or_path: the dataset root: a local path, ``file://`` or ``s3://`` URI.
        decode: fully decode every image (object storage: downloads each image). With False
            only labels and image headers are read (one ranged GET per image).
        workers: threads reading files (default: 8 local, 32 object storage).

    Returns:
        The report; ``report.ok`` is False when any error was found.

    Raises:
        DatasetNotFound: nothing is at the URI.
        StorageError: the object store could not be listed or read.
    """
    started = time.perf_counter()
    source = open_source(uri_or_path)
    listing = source.listing()
    report = ValidationReport(uri=source.uri, decode=decode)
    _file_problems(listing, report)
    parsed, config_problems = read_config(source)
    for p in config_problems:
        report.add(p)
    report.names = list(parsed.names)
    if parsed.splits:
        items = _plan(listing, parsed, report)
        local = isinstance(source, LocalSource)
        threads = workers or (8 if local else 32)
        # Same-size local images are hashed (by the worker that reads them) to find copies;
        # object stores give an ETag instead, and a full decode hashes every image anyway.
        sizes = Counter(listing.files[i.image].size for i in items)
        hash_sizes = {n for n, k in sizes.items() if k > 1} if local and not decode else set()
        check = _checker(source, parsed.nc, decode, hash_sizes)
        # Batches, not one future per image: the per-future overhead rivals a header read.
        batch = 8 if not local else 64
        batches = [items[i:i + batch] for i in range(0, len(items), batch)]
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="validate") as pool:
            results = [r for done in pool.map(lambda b: [check(i) for i in b], batches)
                       for r in done]
        _aggregate(results, parsed, listing, report)
    report.sort()
    report.duration_s = time.perf_counter() - started
    log.info("validated %s in %.2fs: %s, %d error(s), %d warning(s)", report.uri,
             report.duration_s, "ok" if report.ok else "INVALID", len(report.errors),
             len(report.warnings))
    return report


def _file_problems(listing: Listing, report: ValidationReport) -> None:
    for rel in listing.escapes:
        report.add(problem("symlink_escape",
                           "symlink points outside the dataset root: replace it with the file "
                           "itself (nothing outside the root is read)", rel))
    for rel in listing.unsafe:
        report.add(problem("unsafe_key",
                           f"object key part {rel!r} has an empty, '.' or '..' segment or a "
                           "backslash: rename the object", rel))
    for rel in listing.files:
        if is_excluded(rel):
            report.add(problem("cache_file_ignored",
                               "cache/pickle/numpy file is never loaded (it could run code or "
                               "stand in for an image) and is not synced: delete it", rel))


def read_config(source: LocalSource | StoreSource) -> tuple[ParsedConfig, list[Problem]]:
    """Find and parse the dataset YAML of a source (problems include a missing YAML)."""
    listing = source.listing()
    name, problems = find_yaml(set(listing.files))
    if name is None:
        return ParsedConfig(), problems
    escapes = listing.escapes

    def status(rel: str) -> DirStatus:
        if not rel:
            return "dir"
        if any(rel == e or rel.startswith(e + "/") for e in escapes):
            return "escape"
        return "dir" if rel in listing.dirs else "missing"

    # Never more than the limit (+1, to know it was exceeded) into memory, whatever the size.
    parsed = parse_config(source.read_head(name, MAX_DATA_YAML_BYTES + 1), name, status)
    return parsed, problems + parsed.problems


def split_images(listing: Listing, directory: str) -> list[str]:
    """Images (supported extensions) under a split folder, in path order."""
    return sorted(
        rel for rel in listing.files
        if _under(rel, directory) and suffix(rel) in img.IMAGE_EXTENSIONS
    )


def label_for(image_rel: str) -> str:
    """The label file Ultralytics reads for an image: last ``/images/`` → ``/labels/``, .txt."""
    path = "/" + image_rel
    if "/images/" in path:
        path = "/labels/".join(path.rsplit("/images/", 1))
    return path[1:].rsplit(".", 1)[0] + ".txt"


def _under(rel: str, directory: str) -> bool:
    return not directory or rel.startswith(directory + "/")


def _plan(listing: Listing, parsed: ParsedConfig, report: ValidationReport) -> list[_Item]:
    items: list[_Item] = []
    dirs = parsed.splits
    for a, b in ((a, b) for a in dirs for b in dirs if a < b):
        da, db = dirs[a], dirs[b]
        if da == db or _under(da, db) or _under(db, da):
            report.add(problem(
                "image_leak",
                f"{a} ({da or '.'}) and {b} ({db or '.'}) overlap: every shared image is "
                "scored on data it trained on; give each split its own folder",
                parsed.yaml_file))
    for split, directory in dirs.items():
        summary = SplitSummary(path=directory or ".")
        report.splits[split] = summary
        expected: dict[str, str] = {}
        label_dir = PurePosixPath(label_for(f"{directory}/x.jpg" if directory else "x.jpg")).parent
        label_root = "" if str(label_dir) == "." else str(label_dir)
        for rel in listing.files:
            if not _under(rel, directory) or is_excluded(rel):
                continue
            ext = suffix(rel)
            if ext in img.UNSUPPORTED_IMAGE_EXTENSIONS:
                report.add(problem("image_format_unsupported",
                                   f"{ext} images are not read by the trainer: convert it "
                                   "to JPEG or PNG (or delete it)", rel))
                continue
            if ext not in img.IMAGE_EXTENSIONS:
                continue
            label = label_for(rel)
            if label in expected:
                report.add(problem("label_shared",
                                   f"{rel} and {expected[label]} both read {label}: give each "
                                   "image its own file name stem", rel))
            expected.setdefault(label, rel)
            items.append(_Item(split, rel, label if label in listing.files else None))
            summary.images += 1
        for rel in listing.files:
            if rel.endswith(".txt") and _under(rel, label_root) and rel not in expected:
                if PurePosixPath(rel).name == "classes.txt":
                    message = ("classes.txt is ignored (class names come from data.yaml "
                               "names): delete it, or check names has the same order")
                else:
                    message = ("label file has no image (looked for "
                               f"{PurePosixPath(rel).stem}.jpg/.png/… in {directory or '.'}): "
                               "add the image or delete the label")
                report.add(problem("label_orphan", message, rel))
    return items


def _checker(
    source: LocalSource | StoreSource, nc: int | None, decode: bool, hash_sizes: set[int]
) -> Callable[[_Item], _Result]:
    files = source.listing().files

    def check(item: _Item) -> _Result:
        result = _Result(item)
        if item.label is not None:
            try:
                # At most the limit (+1, to see it exceeded): a huge "label" never fills memory.
                data = source.read_head(item.label, MAX_LABEL_BYTES + 1)
            except OSError as exc:
                result.problems.append(problem(
                    "file_unreadable", f"cannot be read ({exc}): fix its permissions",
                    item.label))
            else:
                parsed = parse_label_bytes(data, nc, item.label)
                result.problems.extend(parsed.problems)
                result.boxes = [(b[0], b[3] * b[4]) for b in parsed.boxes]
                result.label_empty = not parsed.boxes and not parsed.problems
        try:
            if decode:
                data = source.read(item.image)
                result.digest = hashlib.blake2b(data, digest_size=16).digest()
                result.header = img.decode(data)
            elif isinstance(source, LocalSource):
                if files[item.image].size in hash_sizes:
                    data = source.read(item.image)
                    result.digest = hashlib.blake2b(data, digest_size=16).digest()
                    result.header = img.probe_header(data)
                else:
                    result.header = img.probe_header(source.file(item.image))
            else:
                head = source.read_head(item.image, img.HEADER_BYTES)
                try:
                    result.header = img.probe_header(head, partial=len(head) >= img.HEADER_BYTES)
                except img.HeaderIncomplete:
                    result.header = img.probe_header(source.read(item.image))
        except img.ImageProblem as exc:
            message = exc.message
            if PurePosixPath(item.image).name.startswith("._"):
                message += " ('._' files are macOS metadata, not images: delete them)"
            result.problems.append(problem(exc.code, message, item.image))
        except OSError as exc:
            result.problems.append(problem(
                "file_unreadable", f"cannot be read ({exc}): fix its permissions", item.image))
        return result

    return check


def _aggregate(
    results: list[_Result], parsed: ParsedConfig, listing: Listing, report: ValidationReport
) -> None:
    names = parsed.names
    label_of = (lambda c: names[c]) if names else str
    per_split: dict[str, Counter[int]] = defaultdict(Counter)
    images_per_class: dict[str, Counter[int]] = defaultdict(Counter)
    missing: dict[str, list[str]] = defaultdict(list)
    widths: list[int] = []
    heights: list[int] = []
    formats: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    areas: list[float] = []
    for r in results:
        for p in r.problems:
            report.add(p)
        split = r.item.split
        summary = report.splits[split]
        if r.item.label is None:
            summary.unlabelled += 1
            missing[split].append(r.item.image)
        elif r.label_empty:
            summary.backgrounds += 1
        else:
            summary.labelled += 1
        summary.instances += len(r.boxes)
        per_split[split].update(c for c, _ in r.boxes)
        images_per_class[split].update({c for c, _ in r.boxes})
        if split == "train":
            areas.extend(a for _, a in r.boxes)
        if r.header is not None:
            widths.append(r.header.width)
            heights.append(r.header.height)
            formats[r.header.format] += 1
            shapes[f"{r.header.width}x{r.header.height}"] += 1
    for split, summary in report.splits.items():
        if summary.images == 0:
            if split == "test":
                report.add(problem("split_test_empty",
                                   f"test folder {summary.path} has no images: add held-out "
                                   f"images or drop `test:` from {parsed.yaml_file}",
                                   summary.path))
            else:
                report.add(problem("split_empty",
                                   f"{split} folder {summary.path} has no images "
                                   f"({', '.join(sorted(img.IMAGE_EXTENSIONS))}): upload them "
                                   "or fix the path", summary.path))
        if missing.get(split):
            examples = ", ".join(PurePosixPath(m).name for m in missing[split][:3])
            report.add(problem(
                "image_no_label",
                f"{len(missing[split])} of {summary.images} {split} images have no label file "
                f"(e.g. {examples}); they train as background: add their labels, or an empty "
                ".txt for true backgrounds", missing[split][0]))
    nc = parsed.nc or 0
    report.instances = {
        split: {label_of(c): per_split[split][c] for c in range(nc)} if names else
        {str(c): n for c, n in sorted(per_split[split].items())}
        for split in report.splits
    }
    _duplicates(results, listing, report)
    if names:
        _class_checks(names, per_split, images_per_class, report, parsed.yaml_file)
    if "test" not in report.splits:
        report.add(problem("no_test_split",
                           "no test split: keep a held-out test set that you evaluate exactly "
                           "once (val is used to pick the best epoch)", parsed.yaml_file))
    if areas and sum(a < SMALL_BOX_AREA for a in areas) / len(areas) > 0.5:
        report.add(problem("objects_small",
                           "most train boxes are under 32x32 px at imgsz 640: train at "
                           "imgsz 1280 or tile the images", parsed.yaml_file))
    report.sizes = SizeSummary(
        images=len(widths),
        min_width=min(widths, default=None),
        min_height=min(heights, default=None),
        max_width=max(widths, default=None),
        max_height=max(heights, default=None),
        median_width=statistics.median(widths) if widths else None,
        median_height=statistics.median(heights) if heights else None,
        formats=dict(formats),
        common_sizes=dict(shapes.most_common(5)),
        boxes=len(areas),
        median_box_area=round(statistics.median(areas), 6) if areas else None,
        small_box_fraction=round(sum(a < SMALL_BOX_AREA for a in areas) / len(areas), 4)
        if areas else None,
    )


def _class_checks(
    names: list[str], per_split: dict[str, Counter[int]],
    images_per_class: dict[str, Counter[int]], report: ValidationReport, yaml_file: str | None,
) -> None:
    for split in ("train", "val"):
        if split not in report.splits or report.splits[split].images == 0:
            continue
        for c, name in enumerate(names):
            if per_split[split][c] == 0:
                report.add(problem(
                    "class_no_instances",
                    f"class {c} ({name!r}) has no boxes in {split}: "
                    + ("the model cannot learn it; add labelled examples or remove it from names"
                       if split == "train" else "it cannot be scored; add examples to val"),
                    yaml_file))
    train = per_split.get("train", Counter())
    present = {c: n for c, n in train.items() if n > 0}
    if len(present) >= 2:
        most = max(present, key=lambda c: present[c])
        least = min(present, key=lambda c: present[c])
        ratio = present[most] / present[least]
        if ratio > MAX_IMBALANCE:
            report.add(problem(
                "class_imbalance",
                f"train has {present[most]} {names[most]!r} boxes but {present[least]} "
                f"{names[least]!r} ({ratio:.1f}:1, above {MAX_IMBALANCE:g}:1): oversample the "
                "rare class, undersample the common one or add data", yaml_file))
    few = [(c, n) for c in range(len(names))
           if 0 < (n := images_per_class.get("train", Counter())[c]) < MIN_IMAGES_PER_CLASS]
    if few:
        listed = ", ".join(f"{names[c]} ({n})" for c, n in few[:6])
        report.add(problem(
            "class_few_instances",
            f"train images per class under {MIN_IMAGES_PER_CLASS}: {listed}; fine-tuning usually "
            "needs 200-500 images per class", yaml_file))


def _duplicates(results: list[_Result], listing: Listing, report: ValidationReport) -> None:
    keyed: dict[object, list[_Result]] = defaultdict(list)
    for r in results:
        if r.digest is not None:
            keyed[r.digest].append(r)
        else:
            entry = listing.files[r.item.image]
            if entry.etag:  # object stores: same size and ETag, same bytes
                keyed[(entry.size, entry.etag)].append(r)
    for group in keyed.values():
        if len(group) < 2:
            continue
        first = group[0]
        for other in group[1:]:
            if other.item.image == first.item.image:
                continue  # the same file reached through two overlapping splits
            if other.item.split == first.item.split:
                report.add(problem("image_duplicate",
                                   f"same bytes as {first.item.image}: delete one copy",
                                   other.item.image))
            else:
                report.add(problem("image_leak",
                                   f"same bytes as {first.item.image} ({first.item.split}): "
                                   f"{other.item.split} scores would be optimistic; keep the "
                                   "image in one split only", other.item.image))
