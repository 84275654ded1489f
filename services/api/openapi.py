"""Export the OpenAPI document: ``python -m services.api.openapi > docs/openapi.json``."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from services.api.app import create_app
from services.api.settings import ApiSettings


def document() -> dict[str, Any]:
    """The API's OpenAPI document (independent of any deployment's settings)."""
    with tempfile.TemporaryDirectory() as home:
        settings = ApiSettings(
            home=Path(home), embedded=True, secret_key="openapi-export",
            artifacts_uri=f"file://{home}/artifacts", migrate_on_startup=False,
        )
        app = create_app(settings)
        spec = app.openapi()
        app.state.trainforge.db.dispose()
        return spec


def text() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(text())
