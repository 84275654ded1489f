"""The trainforge REST API (FastAPI). Build it with :func:`create_app`."""

from services.api.app import create_app

__all__ = ["create_app"]
