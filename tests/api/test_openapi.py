"""The published OpenAPI document matches the code and lists every status code returned."""

from __future__ import annotations

import json
from pathlib import Path

from services.api.openapi import document

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {"/healthz", "/readyz", "/metrics", "/v1/downloads/{id}/{name}",
          "/v1/downloads/models/{team}/{name}/{version}/{file}"}


def test_docs_openapi_json_is_up_to_date() -> None:
    published = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert published == document(), (
        "docs/openapi.json is stale: run `make schema` (or "
        "`python -m services.api.openapi > docs/openapi.json`) and commit it"
    )


def test_every_operation_documents_its_error_statuses() -> None:
    spec = document()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            where = f"{method.upper()} {path}"
            if path not in PUBLIC:
                assert "401" in codes, where
            if "{id}" in path and path not in PUBLIC and not path.startswith("/internal"):
                assert "404" in codes, where
            if "requestBody" in operation:
                assert {"400", "413", "422"} <= codes, where
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert "application/problem+json" in response["content"], (where, code)
