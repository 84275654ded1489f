"""Commands and helpers that live beside what they run, found through entry points.

The kernel imports neither ``services`` nor ``jobs`` (the import contract in pyproject.toml):
``trainforge serve``, ``db`` and ``tokens`` live in services/cli/, the evaluation behind
``trainforge models compare --dataset`` in jobs/train/compare.py, and each is declared under an
entry-point group of the distribution. An install without them (an image that ships only the
kernel) simply lacks those commands, the way MLflow mounts its optional command groups.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

#: The commands of the services: name → ``typer.Typer`` group or command function.
COMMANDS_GROUP = "trainforge.cli"
#: ``compare``: both versions of a model evaluated on this machine.
EVALUATION_GROUP = "trainforge.evaluation"


def _entry_point(group: str, name: str) -> EntryPoint | None:
    found = entry_points(group=group, name=name)
    return next(iter(found), None)


def load(group: str, name: str) -> Any | None:
    """What the entry point ``name`` of ``group`` names, or None when this install has none
    (or it cannot be imported here)."""
    entry = _entry_point(group, name)
    if entry is None:
        return None
    try:
        return entry.load()
    except ImportError:
        return None
