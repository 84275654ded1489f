"""Settings every trainforge process shares (each deployable extends these)."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    return Path.home() / ".trainforge"


class CommonSettings(BaseSettings):
    """Read from TRAINFORGE_* environment variables (see docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix="TRAINFORGE_", extra="ignore")

    home: Path = Field(default_factory=default_home)
    artifacts_uri: str | None = Field(None, description="default: file://$HOME/artifacts")
    models_uri: str | None = Field(None, description="default: file://$HOME/models")
    s3_endpoint_url: str | None = None
    dataset_cache: Path | None = Field(None, description="default: $HOME/cache/datasets")

    @property
    def resolved_artifacts_uri(self) -> str:
        return (self.artifacts_uri or f"file://{self.home.resolve()}/artifacts").rstrip("/")

    @property
    def resolved_models_uri(self) -> str:
        return (self.models_uri or f"file://{self.home.resolve()}/models").rstrip("/")

    @property
    def resolved_dataset_cache(self) -> Path:
        return self.dataset_cache or self.home / "cache" / "datasets"


@functools.cache
def get_common_settings() -> CommonSettings:
    return CommonSettings()
