"""Where the repository, the shared CRD schemas and the CLI tools are."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Overrides the schemas folder (a checkout whose shared/ is not beside the repository).
SCHEMAS_ENV = "TRAINFORGE_SCHEMAS_DIR"


def schemas_dir() -> Path:
    """``<repo>/../shared/schemas`` (CI lays shared/ beside the clone), or $TRAINFORGE_SCHEMAS_DIR.

    Fails the test (never skips) when the folder is missing: without it nothing is validated.
    """
    override = os.environ.get(SCHEMAS_ENV)
    path = Path(override) if override else REPO.parent / "shared" / "schemas"
    if not (path / "kuberay" / "ray.io_rayjobs.yaml").is_file():
        pytest.fail(
            f"CRD schemas not found at {path}: the shared/ folder must sit beside the repository "
            f"(…/shared/schemas/kuberay/ray.io_rayjobs.yaml), or set {SCHEMAS_ENV} to it",
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
