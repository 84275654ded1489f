"""The dispatcher deployable picks its backend from settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.build import make_backend
from services.dispatcher.settings import DispatcherSettings
from trainforge.errors import BackendConfigError


def test_local_backend_with_its_state_dir_and_module(tmp_path: Path) -> None:
    settings = DispatcherSettings(home=tmp_path, secret_key="s" * 32,
                                  dispatcher_local_module="tests.standin")
    backend = make_backend(settings)
    assert isinstance(backend, LocalBackend)
    assert backend.state_dir == tmp_path / "dispatcher" and backend.module == "tests.standin"


@pytest.mark.parametrize("module", ["jobs.train", "os", "attacker.payload", "tests.standin.x"])
def test_only_the_test_stand_in_may_replace_the_job_modules(tmp_path: Path, module: str) -> None:
    with pytest.raises(ValidationError, match="is not a job module trainforge runs"):
        DispatcherSettings(home=tmp_path, secret_key="s" * 32, dispatcher_local_module=module)


def test_the_stand_in_ships_in_no_package() -> None:
    import tomllib

    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text())
    packages = config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert "tests" not in packages
    assert not [p for p in packages if list((repo / p).rglob("standin*"))]


def test_kuberay_backend_is_wired_and_says_what_it_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAINFORGE_KUBERAY_CONFIG", raising=False)
    settings = DispatcherSettings(home=tmp_path, secret_key="s" * 32,
                                  dispatcher_backend="kuberay")
    with pytest.raises(BackendConfigError, match="TRAINFORGE_KUBERAY_CONFIG"):
        make_backend(settings)


def test_the_ray_backend_needs_the_jobs_api_address(tmp_path: Path) -> None:
    settings = DispatcherSettings(home=tmp_path, secret_key="s" * 32, dispatcher_backend="ray")
    with pytest.raises(ValueError, match="TRAINFORGE_RAY_ADDRESS"):
        make_backend(settings)
    settings = settings.model_copy(update={"ray_address": "http://127.0.0.1:8265"})
    backend = make_backend(settings)
    assert backend.name == "ray" and getattr(backend, "address", None) == "http://127.0.0.1:8265"


def test_unknown_backends_are_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINFORGE_DISPATCHER_BACKEND", "slurm")
    monkeypatch.setenv("TRAINFORGE_SECRET_KEY", "s" * 32)
    with pytest.raises(ValueError, match="dispatcher_backend"):
        DispatcherSettings()
