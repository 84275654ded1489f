"""docs/configuration.md documents every setting of the API and the dispatcher."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from services.api.settings import ApiSettings
from services.dispatcher.settings import DispatcherSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("cls", [ApiSettings, DispatcherSettings])
def test_every_setting_is_documented(cls: type[BaseSettings]) -> None:
    prefix = cls.model_config.get("env_prefix", "")
    missing = [f"{prefix}{name}".upper() for name in cls.model_fields
               if f"`{prefix}{name}`".upper() not in DOC.upper()]
    assert not missing, f"document these in docs/configuration.md: {missing}"
