"""``python -m services.api``: serve the API with uvicorn (settings from TRAINFORGE_* env)."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from services.api.app import create_app
from services.api.settings import get_settings


def app_from_env() -> FastAPI:
    """The uvicorn factory: one app per worker process."""
    return create_app(get_settings())


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "services.api.__main__:app_from_env",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_level=settings.log_level,
        access_log=settings.api_access_log,
        proxy_headers=True,
    )


if __name__ == "__main__":
    main()
