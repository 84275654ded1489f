"""Retryability is a property of the error classes: the dispatcher's never-retried codes, the
error-code table in docs/training.md and the classes themselves agree."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import jobs
import services
import trainforge
from services.store.dispatch import NON_RETRYABLE_ERRORS
from trainforge.errors import TrainforgeError, code_table, error_classes, non_retryable_codes

REPO = Path(__file__).resolve().parents[2]
#: Refusals no retry can change, as the dispatcher has always treated them.
PERMANENT = {"spec_invalid", "spec_tampered", "location_invalid", "access_denied",
             "dataset_invalid", "dataset_not_found", "dataset_unsafe", "weights_unavailable",
             "weights_unsafe", "model_not_found", "resources_unavailable", "retries_exhausted"}


def _import_everything() -> None:
    """Import every module of the three packages, so every error class is defined."""
    for package in (trainforge, services, jobs):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            # __main__ modules run their job; Alembic's env.py runs only under Alembic.
            if not info.name.endswith(("__main__", ".migrations.env")) and \
                    ".migrations.versions." not in info.name:
                importlib.import_module(info.name)


def test_every_error_class_is_defined_in_trainforge_errors() -> None:
    _import_everything()
    elsewhere = [f"{cls.__module__}.{cls.__qualname__}" for cls in error_classes()
                 if cls.__module__ not in ("trainforge.errors", "trainforge.client")]
    assert elsewhere == [], "define job errors in trainforge/errors.py (with retryable)"


def test_each_code_has_one_retry_decision() -> None:
    decisions: dict[str, set[bool]] = {}
    for cls in error_classes():
        decisions.setdefault(cls.code, set()).add(cls.retryable)
    assert {code: d for code, d in decisions.items() if len(d) > 1} == {}


def test_the_dispatcher_never_retries_exactly_the_permanent_classes() -> None:
    assert NON_RETRYABLE_ERRORS == non_retryable_codes() == PERMANENT
    for cls in error_classes():
        assert (cls.code in NON_RETRYABLE_ERRORS) is (not cls.retryable), cls


@pytest.mark.parametrize("cls", error_classes(), ids=lambda c: c.__name__)
def test_every_class_says_what_it_means(cls: type[TrainforgeError]) -> None:
    assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} needs a docstring"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", cls.code)


def test_the_table_in_docs_matches_the_classes() -> None:
    doc = (REPO / "docs" / "training.md").read_text()
    block = re.search(r"<!-- error-codes:start -->\n(.*?)<!-- error-codes:end -->", doc, re.S)
    assert block is not None
    assert block.group(1) == code_table(), (
        "docs/training.md's error codes drifted from trainforge/errors.py: run `make schema`")
