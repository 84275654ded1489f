"""Dataset validation for the API (trainforge.datasets does the work)."""

from __future__ import annotations

import importlib

from services.api.schemas import DatasetValidation
from services.api.state import AppState
from trainforge.errors import InvalidRequest, NotReady


def validate(state: AppState, uri: str) -> DatasetValidation:
    """Validate the dataset at ``uri`` and return its report.

    Outside embedded mode only ``s3://`` URIs are accepted: a file path would make the API
    read its own filesystem on a caller's behalf.

    Raises:
        InvalidRequest: a local path outside embedded mode.
        NotReady: this deployment has no dataset toolkit installed.
        DatasetError: the URI cannot be read at all (bucket missing, access denied…).
    """
    if not state.settings.embedded and not uri.startswith("s3://"):
        raise InvalidRequest("uri: the API validates s3:// datasets only (got a local path)")
    try:
        # Imported lazily: the toolkit is optional for the API image.
        toolkit = importlib.import_module("trainforge.datasets")
    except ImportError as exc:
        raise NotReady(f"dataset validation is not installed in this deployment ({exc})") from None
    report = toolkit.validate(uri)
    return DatasetValidation(ok=bool(report.ok), report=report.to_dict())
