"""Render the Helm chart with the real helm binary (v4), once per values set."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubecheck.paths import REPO, find_tool

CHART = REPO / "charts" / "trainforge"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "tf", "ml"
#: Every values set CI renders: the defaults plus each charts/trainforge/ci/*-values.yaml.
VALUE_SETS: list[str] = ["default", *(p.name for p in CI_VALUES)]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm (PATH or .venv/bin; a missing helm fails the test, it never skips)."""
    proc = subprocess.run([find_tool("helm"), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
    return proc


def values_args(value_set: str) -> list[str]:
    return [] if value_set == "default" else ["-f", str(CHART / "ci" / value_set)]


@functools.cache
def _render(value_set: str) -> str:
    return helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                *values_args(value_set)).stdout


def render(value_set: str) -> list[dict[str, Any]]:
    """The objects `helm template` makes for a values set (fresh copies)."""
    return [d for d in yaml.safe_load_all(_render(value_set)) if d]


@pytest.fixture(params=VALUE_SETS)
def value_set(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def rendered(value_set: str) -> list[dict[str, Any]]:
    return render(value_set)


def chart_values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in by_kind(objs, kind) if o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def chart_path(*parts: str) -> Path:
    return CHART.joinpath(*parts)
