"""The suite's root: shared fixtures load as plugins from tests/fixtures/, and tests that use
a heavy fixture are marked ``slow`` here, whatever their module says (the fast tier,
``make test-fast``, runs ``-m "not slow"``: see docs/development.md)."""

from __future__ import annotations

import os

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


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow = pytest.mark.slow
    for item in items:
        if HEAVY_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(slow)
