"""Dashboard route tests run on the API tests' app and job store (SQLite and PostgreSQL)."""

from __future__ import annotations

from tests.api.conftest import app, auth, client, make_token, settings  # noqa: F401
from tests.jobstore import artifacts_dir, database_url, db  # noqa: F401
