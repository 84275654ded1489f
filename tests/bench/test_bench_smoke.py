"""Every benchmark under bench/ still runs: each script, at its ``--smoke`` sizes, exits 0 and
prints the ratio lines its ``SMOKE_RATIO_LINES`` patterns describe (bench/_smoke.py).

The scripts are found by globbing ``bench/*.py`` (helpers start with ``_``), so a new
benchmark is checked without anyone adding it here. Each runs as a subprocess, as
``make bench`` runs it, with TMPDIR pointing at a short directory of its own: what the script
and its jobs put in the system temp directory (work dirs, Ray sessions) is removed afterwards.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p for p in (REPO / "bench").glob("*.py") if not p.name.startswith("_"))
#: A smoke run that takes longer than this is a hung benchmark, not a slow one.
SMOKE_TIMEOUT_S = 600


def _constant(script: Path, name: str, default: Any = None) -> Any:
    """A module-level literal of ``script``, read without importing it (importing a
    benchmark would import torch, Ray or the API into the test process)."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            assert node.value is not None
            return ast.literal_eval(node.value)
    return default


def _smoke_params() -> Iterator[Any]:
    for script in SCRIPTS:
        marks = _constant(script, "SMOKE_MARKS", ("slow",))
        yield pytest.param(script, id=script.stem,
                           marks=[getattr(pytest.mark, mark) for mark in marks])


def test_every_benchmark_declares_its_ratio_lines() -> None:
    """The fast tier's share: each script has ``--smoke`` and patterns that compile."""
    assert SCRIPTS, "no benchmark found under bench/"
    for script in SCRIPTS:
        patterns = _constant(script, "SMOKE_RATIO_LINES")
        assert isinstance(patterns, tuple) and patterns, \
            f"{script.name}: no SMOKE_RATIO_LINES (a tuple of regexes for its ratio lines)"
        for pattern in patterns:
            re.compile(pattern)
        assert "parse_args(parser" in script.read_text(), \
            f"{script.name}: parse its options with bench/_smoke.py's parse_args (--smoke)"


@pytest.mark.parametrize("script", list(_smoke_params()))
def test_benchmark_smoke_run_prints_its_ratio_lines(script: Path,
                                                   request: pytest.FixtureRequest) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    if "postgres" in _constant(script, "SMOKE_MARKS", ()):
        # The suite's server (skipped, with the reason printed, when it cannot be reached).
        env["TRAINFORGE_BENCH_PG"] = request.getfixturevalue("postgres_server")
    # Short: Ray keeps unix sockets under $TMPDIR/ray, and a socket path has 107 bytes at most.
    temp = tempfile.mkdtemp(prefix="tf-bench-", dir="/tmp")
    env["TMPDIR"] = temp
    try:
        returncode, output = _run(script, env)
    finally:
        _remove_temp(Path(temp))
    assert returncode == 0, f"{script.name} --smoke exited {returncode}:\n{output[-6000:]}"
    for pattern in _constant(script, "SMOKE_RATIO_LINES"):
        assert re.search(pattern, output, re.MULTILINE), \
            f"{script.name} --smoke printed no line matching {pattern!r}:\n{output[-6000:]}"


def _remove_temp(temp: Path) -> None:
    """Remove the run's TMPDIR, and the Ray session directories linked from it: a
    `trainforge serve` whose home has a long path keeps its head's sessions under a short
    /tmp/tf-ray-* directory, linked as ``<home>/ray`` (services/dispatcher/local_ray.py)."""
    for link in temp.rglob("ray"):
        if link.is_symlink():
            shutil.rmtree(os.path.realpath(link), ignore_errors=True)
    shutil.rmtree(temp, ignore_errors=True)


def _run(script: Path, env: dict[str, str]) -> tuple[int, str]:
    """``python SCRIPT --smoke`` in a session of its own; on a timeout the whole session
    (its jobs, their Ray) is killed and the test fails with the output so far."""
    proc = subprocess.Popen([sys.executable, str(script), "--smoke"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=SMOKE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"{script.name} --smoke ran over {SMOKE_TIMEOUT_S}s:\n"
                             f"{output[-6000:]}") from None
    return proc.returncode, output
