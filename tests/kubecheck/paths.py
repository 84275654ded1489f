"""Where the repository, the vendored CRD schemas and the CLI tools are."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: The CRDs the tests validate against, vendored with their upstream refs (crds/README.md).
CRDS = Path(__file__).resolve().parent / "crds"
#: Overrides the schemas folder (to validate against other CRD versions).
SCHEMAS_ENV = "TRAINFORGE_SCHEMAS_DIR"


def schemas_dir() -> Path:
    """``tests/kubecheck/crds`` (vendored), or $TRAINFORGE_SCHEMAS_DIR.

    Fails the test (never skips) when the folder is missing: without it nothing is validated.
    """
    override = os.environ.get(SCHEMAS_ENV)
    path = Path(override) if override else CRDS
    if not (path / "kuberay" / "ray.io_rayjobs.yaml").is_file():
        pytest.fail(
            f"CRD schemas not found at {path} (…/kuberay/ray.io_rayjobs.yaml): run "
            f"`make crds`, or set {SCHEMAS_ENV} to a folder laid out like tests/kubecheck/crds",
            pytrace=False,
        )
    return path


def find_tool(name: str) -> str:
    """A CLI tool from PATH or the repository's .venv/bin; fails the test when absent."""
    found = shutil.which(name)
    if found:
        return found
    local = REPO / ".venv" / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    pytest.fail(
        f"{name} not found on PATH or in {REPO / '.venv/bin'}: run `make setup` "
        "(scripts/setup.sh installs it)",
        pytrace=False,
    )
