"""OpenAPI documentation of the problem+json responses each operation can return."""

from __future__ import annotations

from typing import Any

from services.api.errors import PROBLEM_JSON

_DESCRIPTIONS = {
    400: "The body is not valid JSON (or not UTF-8)",
    401: "Missing, unknown or revoked bearer token",
    403: "Forbidden: a location the storage access policy does not allow, a limit, or an "
         "invalid link",
    404: "No such job, schedule or webhook for this team (another team's is reported the same "
         "way)",
    409: "The job's (or schedule's) state does not allow this",
    413: "Request body too large",
    422: "The request does not validate (field paths in `errors`)",
    429: "The team is at its active-job limit, or the token has its most open streams; retry "
         "after Retry-After seconds",
    503: "A dependency (database, object store) is unavailable",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for problem+json errors."""
    return {
        status: {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }
