"""The suite's root: shared fixtures load as plugins from tests/fixtures/, and collection sizes
every test (docs/development.md):

* a test that uses a heavy fixture is marked ``slow`` here, whatever its module says, so the
  fast tier (``make test-fast``: ``-m "not slow"``) never runs one by accident;
* tests that share a module-scoped fixture of their own module form one pytest-xdist group,
  so that a parallel run builds that fixture once, on one worker (pytest below 9.2:
  docs/development.md, "Running tests");
* slow tests run first: with two workers, the long ones start while there is work left to
  balance them with.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")

pytest_plugins = [
    "tests.fixtures.s3",
    "tests.fixtures.jobstore",
    "tests.fixtures.api",
    "tests.fixtures.embedded",
    "tests.fixtures.training",
    "tests.fixtures.checkpoints",
    "tests.fixtures.export",
    "tests.fixtures.kube",
    "tests.fixtures.chart",
]

#: Fixtures that start processes or train models: every test that uses one (directly or
#: through another fixture) is slow.
HEAVY_FIXTURES = frozenset({
    "serve_process",  # a `trainforge serve` process (API, dispatcher, warm Ray)
    "ray_head",  # `ray start --head`
    "local_runner", "cluster_runner", "sweep_runner",  # job entrypoints that start Ray
    "trained", "genuine_checkpoints", "promotion_checkpoints",  # trained models
    "browser",  # chromium through Playwright
})


def _module_fixture_group(item: pytest.Item) -> str | None:
    """The item's module id when the item uses a module-scoped fixture defined there."""
    info = getattr(item, "_fixtureinfo", None)
    module = item.nodeid.split("::", 1)[0]
    for defs in (info.name2fixturedefs.values() if info is not None else ()):
        if any(d.scope == "module" and d.baseid == module for d in defs):
            return module
    return None


#: Process-wide switches that code under test sets in ``os.environ`` (jobs/core/adapter/
#: safety.py hardens the process it runs in); restored after each test so that one test's
#: hardening never reaches the processes a later test starts on the same worker.
_PROCESS_SWITCHES = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")


@pytest.fixture(autouse=True)
def _restore_process_switches() -> Iterator[None]:
    before = {name: os.environ.get(name) for name in _PROCESS_SWITCHES}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker and xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        group = _module_fixture_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: slow first
