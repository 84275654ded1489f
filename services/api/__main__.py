"""``python -m services.api``: serve the API with uvicorn (settings from TRAINFORGE_* env)."""

from __future__ import annotations

import logging

import uvicorn
from fastapi import FastAPI

from services.api.app import create_app
from services.api.settings import get_settings
from trainforge.private import private_home, restrict_umask


def app_from_env() -> FastAPI:
    """The uvicorn factory: one app per worker process."""
    return create_app(get_settings())


def main() -> None:
    # Before anything is created (uvicorn's workers inherit it): see trainforge/private.py.
    restrict_umask()
    settings = get_settings()
    if settings.embedded:
        private_home(settings.home)
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
        # The app believes X-Forwarded-* from TRAINFORGE_API_TRUSTED_PROXIES only (app.py);
        # uvicorn's own handling would trust 127.0.0.1 or FORWARDED_ALLOW_IPS besides.
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
