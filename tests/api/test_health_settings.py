"""Readiness reports what is down; settings refuse placeholder secrets outside embedded mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from services.api import create_app
from services.api.settings import ApiSettings
from services.dispatcher.settings import DispatcherSettings
from services.store.settings import StoreSettings
from tests.fixtures.network import free_port


def test_readyz_is_503_when_the_database_is_down(settings: ApiSettings) -> None:
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none"
    settings = settings.model_copy(update={"database_url": SecretStr(down)})
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["checks"]["database"].startswith("error")
    assert response.json()["checks"]["object_store"] == "ok"


def test_readyz_is_503_when_the_bucket_is_missing(
    settings: ApiSettings, s3_server: str
) -> None:
    settings.artifacts_uri = "s3://no-such-bucket-here/prefix"
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks == {"database": "ok", "object_store": "error: bucket_not_found"}


@pytest.mark.parametrize("cls", [ApiSettings, DispatcherSettings])
@pytest.mark.parametrize("secret", [None, "change-me", ""])
def test_placeholder_secrets_are_refused_outside_embedded_mode(
    cls: type[StoreSettings], secret: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAINFORGE_SECRET_KEY", raising=False)
    monkeypatch.delenv("TRAINFORGE_EMBEDDED", raising=False)
    kwargs = {"home": tmp_path} if secret is None else {"home": tmp_path, "secret_key": secret}
    with pytest.raises(ValidationError, match="TRAINFORGE_SECRET_KEY"):
        cls(**kwargs)
    embedded = cls(embedded=True, **kwargs)
    key = embedded.secret_key_bytes()
    assert len(key) >= 32 and key == cls(embedded=True, **kwargs).secret_key_bytes()
    assert (tmp_path / "secret-key").stat().st_mode & 0o777 == 0o600


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TRAINFORGE_HOME", str(tmp_path))
    monkeypatch.setenv("TRAINFORGE_DATABASE_URL", "postgresql://u:pw@db:5432/tf")
    monkeypatch.setenv("TRAINFORGE_SECRET_KEY", "s3cr3t-value-from-a-k8s-secret")
    monkeypatch.setenv("TRAINFORGE_TEAM_LIMITS", '{"vision": {"max_active_jobs": 3}}')
    settings = ApiSettings()
    assert settings.resolved_database_url == "postgresql+psycopg://u:pw@db:5432/tf"
    assert "pw" not in repr(settings) and "s3cr3t" not in repr(settings)
    assert settings.limits_for("vision").max_active_jobs == 3
    assert settings.limits_for("other").max_active_jobs == 20
