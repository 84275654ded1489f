"""Settings of the API deployable (``python -m services.api`` and ``trainforge serve``)."""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.store.settings import StoreSettings


class TeamLimits(BaseModel):
    """What one team may use. Defaults apply to every team without an entry of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_active_jobs: int = Field(20, ge=0, description="unfinished jobs at once (else 429)")
    max_gpus_per_job: int = Field(8, ge=0, description="GPUs one job may ask for (else 403)")
    max_sweep_trials: int = Field(64, ge=1, description="trials of one sweep (else 403)")


class ApiSettings(StoreSettings):
    """Read from TRAINFORGE_* environment variables (docs/configuration.md)."""

    api_host: str = "0.0.0.0"
    api_port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    api_access_log: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="larger bodies get 413")
    default_limits: TeamLimits = Field(default_factory=TeamLimits)
    team_limits: dict[str, TeamLimits] = Field(
        default_factory=dict, description='per-team overrides, JSON: {"vision": {...}}'
    )
    migrate_on_startup: bool = True
    token_cache_s: float = Field(
        5.0, ge=0, le=300, description="how long a verified token is trusted without a lookup "
        "(a revoked token stops working within this time); 0 disables the cache",
    )
    db_pool_size: int = Field(10, ge=1, le=200)
    stream_max_s: float = Field(
        3600.0, gt=0, description="longest SSE or log-follow stream; clients then reconnect"
    )
    stream_poll_s: float = Field(1.0, gt=0, le=60)
    download_url_ttl_s: int = Field(900, ge=1, le=900, description="download links (≤ 15 min)")

    def limits_for(self, team: str) -> TeamLimits:
        return self.team_limits.get(team, self.default_limits)


@functools.cache
def get_settings() -> ApiSettings:
    """The process's settings, read once from the environment."""
    return ApiSettings()
