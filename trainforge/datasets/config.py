"""data.yaml: parse it safely, resolve its splits inside the dataset root, write a local one.

Loaded with :func:`trainforge.safeyaml.safe_load`: ``yaml.safe_load`` semantics (no tags, no
objects) within limits on size, depth and alias expansion, checked before any value is built.
A stock Ultralytics data.yaml validates, with warnings for what trainforge ignores: its
``download:`` key (never run: the data.yaml jobs give Ultralytics is written anew, without it)
and a ``path:`` that is absolute (the author's laptop) or not a folder inside the dataset root
(Ultralytics reads a relative one from its own datasets folder): the dataset root is wherever
the dataset is. A relative ``path:`` naming a folder inside the root is that folder. Messages
show YAML values through :func:`_show`, never a full ``repr``: a value can be large.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml

from trainforge import safeyaml
from trainforge.datasets._source import DATA_YAML_NAMES, check_local_root
from trainforge.datasets.report import Problem, problem
from trainforge.errors import DatasetError

log = logging.getLogger(__name__)

MAX_DATA_YAML_BYTES = safeyaml.MAX_BYTES
SPLITS = ("train", "val", "test")
_KNOWN_KEYS = frozenset({"path", "train", "val", "test", "nc", "names", "download"})
_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")
#: A top-level ``key:`` line: the key starts in column 0 and ends at the first colon.
_TOP_LEVEL_KEY = re.compile(rb"([^\s:#][^:\n]*?)[ \t]*:")
#: Problems of one kind listed one by one (unknown keys, repeated names); the rest are summed
#: up in one more, so that a hostile data.yaml cannot make a report of megabytes.
MAX_PROBLEMS_PER_KIND = 20

DirStatus = Literal["dir", "missing", "escape"]


@dataclass(frozen=True)
class DataConfig:
    """A dataset's data.yaml, checked and resolved against its root.

    Attributes:
        root: the dataset root (absolute).
        names: class names, index = class id.
        splits: "train", "val" and maybe "test" -> absolute image directory inside root.
        yaml_file: the YAML's file name at the root (usually data.yaml).
    """

    root: Path
    names: list[str]
    splits: dict[str, Path]
    yaml_file: str = "data.yaml"

    @property
    def nc(self) -> int:
        return len(self.names)


@dataclass
class ParsedConfig:
    """What validation needs from data.yaml, whatever else is wrong with it."""

    yaml_file: str | None = None
    names: list[str] = field(default_factory=list)
    nc: int | None = None  # for the class-range rule: len(names), else a valid nc
    splits: dict[str, str] = field(default_factory=dict)  # split -> dir relative to the root
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def find_yaml(files: set[str] | Callable[[str], bool]) -> tuple[str | None, list[Problem]]:
    """The dataset YAML at the root, or problems saying it is missing or ambiguous."""
    exists = files.__contains__ if isinstance(files, set) else files
    found = [name for name in DATA_YAML_NAMES if exists(name)]
    if not found:
        return None, [problem(
            "data_yaml_missing",
            "no data.yaml at the dataset root: add one with train, val and names (see "
            "`trainforge dataset synth` for an example)",
        )]
    if len(found) > 1:
        return None, [problem(
            "data_yaml_ambiguous",
            f"found {', '.join(found)} at the root: keep exactly one (data.yaml)",
            found[1],
        )]
    return found[0], []


def parse_config(
    data: bytes, yaml_file: str, dir_status: Callable[[str], DirStatus]
) -> ParsedConfig:
    """Parse data.yaml content; every problem is collected, nothing is raised.

    Args:
        data: the file's bytes.
        yaml_file: its name at the root (for problem locations).
        dir_status: tells whether a root-relative directory exists, is missing, or is reached
            through a symlink that leaves the root.
    """
    out = ParsedConfig(yaml_file=yaml_file)
    add = out.problems.append
    if len(data) > MAX_DATA_YAML_BYTES:
        add(problem("data_yaml_invalid",
                    f"more than {MAX_DATA_YAML_BYTES} bytes is too large for a data.yaml: keep "
                    "only path, train, val, test, nc and names",
                    yaml_file))
        return out
    try:
        doc = safeyaml.safe_load(data.decode("utf-8"), what=yaml_file)
    except UnicodeDecodeError:
        add(problem("data_yaml_invalid", "not UTF-8 text: save it as UTF-8", yaml_file))
        return out
    except safeyaml.YamlLimitError as exc:
        mark = exc.problem_mark
        add(problem("data_yaml_invalid", exc.problem, yaml_file,
                    int(mark.line) + 1 if mark is not None else None))
        return out
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = int(mark.line) + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        add(problem("data_yaml_invalid", f"YAML does not parse: {reason}: fix the syntax",
                    yaml_file, line))
        return out
    if not isinstance(doc, dict):
        add(problem("data_yaml_invalid",
                    f"top level is {type(doc).__name__}, not a mapping: write `train: …`, "
                    "`val: …`, `names: […]` keys",
                    yaml_file))
        return out
    if "download" in doc:
        add(problem("data_yaml_download_ignored",
                    "download: is ignored and never run: trainforge trains on the files under "
                    "the dataset URI (upload them next to data.yaml); remove the key to silence "
                    "this", yaml_file, _line_of(data, "download")))
    unknown = [key for key in doc if key not in _KNOWN_KEYS]
    for key in unknown[:MAX_PROBLEMS_PER_KIND]:
        add(problem("data_yaml_unknown_key",
                    f"key {_show(key)} is not used by trainforge (it trains detectors from "
                    "path/train/val/test/nc/names): remove it",
                    yaml_file, _line_of(data, str(key))))
    if len(unknown) > MAX_PROBLEMS_PER_KIND:
        add(problem("data_yaml_unknown_key",
                    f"{len(unknown) - MAX_PROBLEMS_PER_KIND} more keys are not used by "
                    "trainforge: keep only path, train, val, test, nc and names", yaml_file))
    _parse_names(doc, data, out)
    base = _parse_base(doc.get("path"), data, yaml_file, dir_status, out)
    if base is not None:
        for split in SPLITS:
            _parse_split(split, doc.get(split), base, data, yaml_file, dir_status, out)
    return out


def _parse_names(doc: dict[Any, Any], data: bytes, out: ParsedConfig) -> None:
    file = out.yaml_file
    add = out.problems.append
    raw = doc.get("names")
    nc = doc.get("nc")
    names: list[str] | None = None
    if raw is None:
        add(problem("data_yaml_names_missing",
                    "data.yaml has no names: add `names:` with one name per class, in class-id "
                    "order", file))
    elif isinstance(raw, list):
        names = _check_name_values(list(enumerate(raw)), data, out)
    elif isinstance(raw, dict):
        pairs: list[tuple[int, Any]] = []
        for key, value in raw.items():
            index = key if isinstance(key, int) and not isinstance(key, bool) else (
                int(key) if isinstance(key, str) and key.isdigit() else None)
            if index is None:
                add(problem("data_yaml_names_invalid",
                            f"names key {_show(key)} is not a class id: use 0, 1, 2, …", file,
                            _line_of(data, "names")))
                return
            pairs.append((index, value))
        # By class id only: ids 1 and "1" would otherwise compare their values (a TypeError).
        pairs.sort(key=lambda pair: pair[0])
        if [i for i, _ in pairs] != list(range(len(pairs))):
            add(problem("data_yaml_names_invalid",
                        f"names ids are {[i for i, _ in pairs]}; they must be 0..{len(pairs) - 1} "
                        "with none missing: renumber the classes (and the labels)",
                        file, _line_of(data, "names")))
            return
        names = _check_name_values(pairs, data, out)
    else:
        add(problem("data_yaml_names_invalid",
                    f"names is a {type(raw).__name__}: write a list (`names: [a, b]`) or a "
                    "mapping (`names: {0: a, 1: b}`)", file, _line_of(data, "names")))
    if names is not None and not names:
        add(problem("data_yaml_names_invalid", "names is empty: list at least one class",
                    file, _line_of(data, "names")))
        names = None
    if names is not None:
        out.names = names
        out.nc = len(names)
        seen: dict[str, int] = {}
        duplicates = 0
        for i, name in enumerate(names):
            if name in seen:
                duplicates += 1
                if duplicates <= MAX_PROBLEMS_PER_KIND:
                    add(problem("data_yaml_names_duplicate",
                                f"classes {seen[name]} and {i} are both named {_show(name)}: "
                                "merge them or rename one", file, _line_of(data, "names")))
            seen.setdefault(name, i)
        if duplicates > MAX_PROBLEMS_PER_KIND:
            add(problem("data_yaml_names_duplicate",
                        f"{duplicates - MAX_PROBLEMS_PER_KIND} more classes repeat a name: "
                        "give every class its own name", file, _line_of(data, "names")))
    if nc is not None:
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            add(problem("data_yaml_nc_mismatch",
                        f"nc is {_show(nc)}; it must be a positive integer (or leave it out)",
                        file, _line_of(data, "nc")))
        elif names is not None and nc != len(names):
            add(problem("data_yaml_nc_mismatch",
                        f"nc is {nc} but names has {len(names)} entries: make nc equal to the "
                        "number of names (or drop nc)", file, _line_of(data, "nc")))
        elif names is None:
            out.nc = nc


def _check_name_values(
    pairs: list[tuple[int, Any]], data: bytes, out: ParsedConfig
) -> list[str] | None:
    names: list[str] = []
    for index, value in pairs:
        if not isinstance(value, str) or not value.strip():
            hint = (" (YAML reads yes/no/on/off/true/false as booleans and bare numbers as "
                    "numbers: quote the name)" if isinstance(value, bool | int | float) else "")
            out.problems.append(problem(
                "data_yaml_names_invalid",
                f"name of class {index} is {_show(value)}, not a non-empty string{hint}",
                out.yaml_file, _line_of(data, "names")))
            return None
        names.append(value)
    return names


def _parse_base(
    raw: Any, data: bytes, file: str, dir_status: Callable[[str], DirStatus], out: ParsedConfig
) -> str | None:
    if raw is None or (isinstance(raw, str) and raw.strip() in {"", ".", "./"}):
        return ""
    line = _line_of(data, "path")
    if not isinstance(raw, str):
        out.problems.append(problem("data_yaml_path_invalid",
                                    f"path is {_show(raw)}, not a string: remove it", file, line))
        return None
    absolute = bool(_ABSOLUTE.match(raw.strip()))
    rel = None if absolute else _normalize(raw)
    status = dir_status(rel) if rel is not None else "missing"
    if status == "escape":
        out.problems.append(problem(
            "symlink_escape",
            f"path {_show(raw)} is a symlink leaving the dataset root: copy the files in",
            file, line))
        return None
    if rel is None or status != "dir":
        why = ("an absolute path" if absolute else
               "it leaves the dataset root" if rel is None else
               "no such folder in the dataset root")
        out.problems.append(problem(
            "data_yaml_path_ignored",
            f"path {_show(raw)} is ignored ({why}): the dataset root is the URI being read and "
            "splits are relative to the folder that holds data.yaml; remove the key to silence "
            "this", file, line))
        return ""
    return rel


def _parse_split(
    split: str, raw: Any, base: str, data: bytes, file: str,
    dir_status: Callable[[str], DirStatus], out: ParsedConfig,
) -> None:
    add = out.problems.append
    line = _line_of(data, split)
    if raw is None:
        if split != "test":
            add(problem("split_missing",
                        f"data.yaml declares no {split} split: add `{split}: {split}/images`",
                        file))
        return
    if isinstance(raw, list):
        if len(raw) == 1:
            raw = raw[0]
        else:
            add(problem("split_list_unsupported",
                        f"{split} lists {len(raw)} directories: trainforge reads one directory "
                        f"per split; move the images into one folder", file, line))
            return
    if not isinstance(raw, str) or not raw.strip():
        add(problem("split_path_invalid",
                    f"{split} is {_show(raw)}: write a folder relative to the root, e.g. "
                    f"{split}/images", file, line))
        return
    text = raw.strip()
    if "://" in text or _ABSOLUTE.match(text):
        add(problem("split_path_invalid",
                    f"{split} is {_show(text)}: write a folder relative to the dataset root, e.g. "
                    f"{split}/images (absolute paths and URLs are refused)", file, line))
        return
    rel = _normalize(text)
    if rel is None or "\\" in text:
        add(problem("split_path_invalid",
                    f"{split} is {_show(text)}: it must stay inside the dataset root, written with "
                    "'/' and without '..'", file, line))
        return
    if rel.lower().endswith(".txt"):
        add(problem("split_list_unsupported",
                    f"{split} is a file list ({text}); trainforge reads one image directory per "
                    "split: point it at a folder", file, line))
        return
    full = f"{base}/{rel}" if base and rel else (base or rel)
    status = dir_status(full)
    if status == "escape":
        add(problem("symlink_escape",
                    f"{split} folder {full} is a symlink that leaves the dataset root: copy the "
                    "images into the dataset instead", full))
        return
    if status == "missing":
        add(problem("split_dir_missing",
                    f"{split} folder {_show(full)} does not exist in the dataset: upload it or fix "
                    f"`{split}:` in {file}", file, line))
        return
    out.splits[split] = full


_SHORT = reprlib.Repr()
# A few entries and levels, strings up to a long path: enough to recognise the value.
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = (
    2, 4, 4, 160, 160)


def _show(value: Any) -> str:
    """A bounded ``repr`` of a YAML value for a message (a full one can be megabytes)."""
    return _SHORT.repr(value)


def _normalize(raw: str) -> str | None:
    """A root-relative POSIX path without '.' parts, or None if it has '..' (or is '')."""
    parts = [p for p in PurePosixPath(raw.strip()).parts if p not in {".", ""}]
    if any(p == ".." for p in parts) or any(p.startswith("/") for p in parts):
        return None
    return "/".join(parts)


def _line_of(data: bytes, key: str) -> int | None:
    """Line number of a top-level ``key:`` in the YAML text (None if not found)."""
    return _top_level_lines(data).get(key)


@functools.lru_cache(maxsize=8)
def _top_level_lines(data: bytes) -> dict[str, int]:
    """Each top-level key's first line, from one pass over the text.

    One pass per document, then lookups: a scan of the text per key cost O(keys × size),
    minutes for a 1 MiB file of short keys. (``bytes`` caches its hash, so the cache lookup
    does not rehash the document either.)
    """
    lines: dict[str, int] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        match = _TOP_LEVEL_KEY.match(line)
        if match:
            lines.setdefault(match.group(1).decode("utf-8", "replace"), number)
    return lines


def _local_dir_status(root: Path) -> Callable[[str], DirStatus]:
    def status(rel: str) -> DirStatus:
        path = root / rel if rel else root
        real = Path(os.path.realpath(path))
        if real != root and root not in real.parents:
            return "escape"
        return "dir" if real.is_dir() else "missing"

    return status


def load_data_yaml(root: Path) -> DataConfig:
    """Read and check ``root/data.yaml`` (data.yml, dataset.yaml also found).

    Args:
        root: a local dataset root.

    Returns:
        The config, with split directories absolute and verified inside ``root``.

    Raises:
        DatasetNotFound: ``root`` is not a directory.
        DatasetError: data.yaml is missing or has an error (the message lists every error,
            each with the line and what to change). Warnings are logged.
    """
    root = check_local_root(Path(root))
    status = _local_dir_status(root)
    name, problems = find_yaml(lambda n: (root / n).is_file())
    if name is None:
        raise DatasetError(problems[0].format())
    if status(name) == "escape":
        raise DatasetError(f"ERROR {name} [symlink_escape] {name} is a symlink leaving {root}: "
                           "copy the file in")
    parsed = parse_config((root / name).read_bytes(), name, status)
    errors = [p for p in parsed.problems if p.severity == "error"]
    if errors:
        raise DatasetError(f"{root / name} is invalid:\n" + "\n".join(p.format() for p in errors))
    for p in parsed.problems:
        log.warning("%s", p.format())
    return DataConfig(
        root=root,
        names=parsed.names,
        splits={split: root / rel if rel else root for split, rel in parsed.splits.items()},
        yaml_file=name,
    )


def write_local_data_yaml(root: Path, dest: Path) -> Path:
    """Write a data.yaml for Ultralytics that points at a local copy of a dataset.

    It holds an absolute ``path`` (``root``), the splits relative to it, ``nc`` and ``names``;
    never a ``download`` key. ``root``'s own data.yaml is checked first.

    Args:
        root: the local dataset root (e.g. ``sync(...).path``).
        dest: where to write (its parent is created).

    Returns:
        ``dest``.

    Raises:
        DatasetError: ``root``'s data.yaml is missing or invalid.
    """
    cfg = load_data_yaml(root)
    doc: dict[str, Any] = {"path": str(cfg.root)}
    for split, path in cfg.splits.items():
        doc[split] = path.relative_to(cfg.root).as_posix() or "."
    doc["nc"] = cfg.nc
    doc["names"] = dict(enumerate(cfg.names))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    os.replace(tmp, dest)
    return dest
