"""The offline checkers themselves: they fail loudly when their inputs are missing, and agree
with kubernetes-validate's own API."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from tests.fixtures.chart import render
from tests.fixtures.kubecheck import paths
from tests.fixtures.kubecheck.k8s import k8s_errors, versions


def test_missing_schemas_folder_fails_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.SCHEMAS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(pytest.fail.Exception, match="CRD schemas not found"):
        paths.schemas_dir()


def test_missing_tool_fails_rather_than_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="make setup"):
        paths.find_tool("definitely-not-a-tool")


def test_kubernetes_130_and_later_schemas_are_bundled() -> None:
    found = versions()
    assert found[0].startswith("1.30.") and len(found) >= 2


def test_cached_validation_agrees_with_kubernetes_validate() -> None:
    deployment = next(o for o in render("default") if o["kind"] == "Deployment")
    for version in (versions()[0], versions()[-1]):
        kubernetes_validate.validate(deployment, version, strict=True)  # raises if invalid
    assert k8s_errors(deployment) == []
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, versions()[0], strict=True)
    assert any("replicaz" in e for e in k8s_errors(broken))
