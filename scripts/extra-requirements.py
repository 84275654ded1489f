#!/usr/bin/env python3
"""Print the requirements of one pyproject extra (base dependencies + the extra), one per line.

The Dockerfiles install these in a layer of their own before copying the source, so a code
change does not reinstall every dependency. ``--without NAME`` drops a requirement the image
replaces (the train image swaps onnxruntime for onnxruntime-gpu: both ship the same module).

Usage: python scripts/extra-requirements.py api
       python scripts/extra-requirements.py train --without onnxruntime
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path


def requirement_name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement (``ray[tune]>=2`` → ``ray``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, extra: str, without: set[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"no extra {extra!r} in {pyproject}; have: {', '.join(sorted(extras))}")
    wanted = [*project.get("dependencies", []), *extras[extra]]
    dropped = {requirement_name(n) for n in without}
    unknown = dropped - {requirement_name(r) for r in wanted}
    if unknown:
        raise SystemExit(f"--without {', '.join(sorted(unknown))}: not a requirement of {extra}")
    return [r for r in wanted if requirement_name(r) not in dropped]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extra")
    parser.add_argument("--without", action="append", default=[], metavar="NAME")
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args(argv)
    print("\n".join(requirements(args.pyproject, args.extra, set(args.without))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
