"""Settings every trainforge process shares (each deployable extends these)."""

from __future__ import annotations

import functools
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainforge.access import team_models_uri


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
    weights_cache: Path | None = Field(
        None, description="stock Ultralytics weights by name (yolov8n.pt), looked up before any "
        "download; default: $HOME/weights")

    @property
    def resolved_artifacts_uri(self) -> str:
        return (self.artifacts_uri or f"file://{self.home.resolve()}/artifacts").rstrip("/")

    @property
    def resolved_models_uri(self) -> str:
        return (self.models_uri or f"file://{self.home.resolve()}/models").rstrip("/")

    @property
    def resolved_dataset_cache(self) -> Path:
        return self.dataset_cache or self.home / "cache" / "datasets"

    @property
    def resolved_weights_cache(self) -> Path:
        return self.weights_cache or self.home / "weights"

    def team_dataset_cache(self, team: str) -> Path:
        """A team's own dataset cache: nothing one team's jobs write there is read by
        another team's (Ultralytics and image caches live beside the synced files)."""
        return self.resolved_dataset_cache / team

    def team_models_uri(self, team: str) -> str:
        """The root of ``team``'s registry in the models store (``<models>/<team>``)."""
        return team_models_uri(self.resolved_models_uri, team)

    def reserved_locations(self) -> dict[str, str]:
        """trainforge's own locations, which no job reads as a dataset or weights."""
        return {
            "artifacts store": self.resolved_artifacts_uri,
            "models store": self.resolved_models_uri,
            "dataset cache": f"file://{self.resolved_dataset_cache.resolve()}",
            "home directory": f"file://{self.home.resolve()}",
        }


@functools.cache
def get_common_settings() -> CommonSettings:
    return CommonSettings()
