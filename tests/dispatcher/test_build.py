"""The dispatcher deployable picks its backend from settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.build import make_backend
from services.dispatcher.settings import DispatcherSettings
from trainforge.errors import BackendConfigError


def test_local_backend_with_its_state_dir_and_module(tmp_path: Path) -> None:
    settings = DispatcherSettings(home=tmp_path, secret_key="s" * 32,
                                  dispatcher_local_module="jobs.standin")
    backend = make_backend(settings)
    assert isinstance(backend, LocalBackend)
    assert backend.state_dir == tmp_path / "dispatcher" and backend.module == "jobs.standin"


def test_kuberay_backend_is_wired_and_says_what_it_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAINFORGE_KUBERAY_CONFIG", raising=False)
    settings = DispatcherSettings(home=tmp_path, secret_key="s" * 32,
                                  dispatcher_backend="kuberay")
    with pytest.raises(BackendConfigError, match="TRAINFORGE_KUBERAY_CONFIG"):
        make_backend(settings)


def test_unknown_backends_are_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINFORGE_DISPATCHER_BACKEND", "nomad")
    monkeypatch.setenv("TRAINFORGE_SECRET_KEY", "s" * 32)
    with pytest.raises(ValueError, match="dispatcher_backend"):
        DispatcherSettings()
