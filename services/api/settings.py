"""Settings of the API deployable (``python -m services.api`` and ``trainforge serve``)."""

from __future__ import annotations

import functools
import ipaddress
from typing import Literal

from pydantic import Field, field_validator

from services.store.settings import StoreSettings
from services.store.settings import TeamLimits as TeamLimits  # re-exported for callers


class ApiSettings(StoreSettings):
    """Read from TRAINFORGE_* environment variables (docs/configuration.md)."""

    api_host: str = "0.0.0.0"
    api_port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(1, ge=1, le=64, description="uvicorn worker processes")
    api_access_log: bool = True
    api_trusted_proxies: list[str] = Field(
        default_factory=list,
        description='addresses or CIDR networks of the proxies whose X-Forwarded-Proto and '
        'X-Forwarded-For the API believes, JSON: ["10.0.0.0/8"]; the dashboard cookie is Secure '
        "when such a proxy says the browser used https; empty: none (the connection's own "
        "scheme and peer count)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="larger bodies get 413")
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
    stream_max_per_token: int = Field(
        16, ge=1, le=10_000, description="open SSE event streams plus followed logs per bearer "
        "token, per API process; one more gets 429",
    )
    download_url_ttl_s: int = Field(900, ge=1, le=900, description="download links (≤ 15 min)")
    ui_session_ttl_s: int = Field(
        8 * 3600, ge=60, le=7 * 24 * 3600, description="how long a dashboard sign-in lasts "
        "(/ui/; the session cookie is signed with a key derived from secret_key)",
    )

    @field_validator("api_trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an address or a CIDR network") from None
        return value


@functools.cache
def get_settings() -> ApiSettings:
    """The process's settings, read once from the environment."""
    return ApiSettings()
