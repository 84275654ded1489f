"""Dataset validation for the API (trainforge.datasets does the work)."""

from __future__ import annotations

from services.api.schemas import DatasetValidation
from services.api.state import AppState
from trainforge.errors import (
    BucketNotFound,
    DatasetError,
    InvalidRequest,
    ObjectNotFound,
    StorageAccessDenied,
    StorageCredentialsMissing,
)

#: Storage errors that mean "this URI cannot be read as given" (the caller can fix it), as
#: opposed to the object store being down (503).
_UNREADABLE = (BucketNotFound, ObjectNotFound, StorageAccessDenied, StorageCredentialsMissing)


def validate(state: AppState, uri: str) -> DatasetValidation:
    """Validate the dataset at ``uri`` (labels and image headers; images are not decoded).

    Outside embedded mode only ``s3://`` URIs are accepted: a file path would make the API
    read its own filesystem on a caller's behalf.

    Raises:
        InvalidRequest: a local path outside embedded mode.
        DatasetError: nothing readable at the URI (no such bucket or prefix, access denied).
        StorageError: the object store failed (503).
    """
    if not state.settings.embedded and not uri.startswith("s3://"):
        raise InvalidRequest("uri: the API validates s3:// datasets only (got a local path)")
    # Imported here: the toolkit (Pillow, image readers) loads only when a validation is asked.
    from trainforge.datasets import validate as validate_dataset

    try:
        # decode=False: one ranged GET per image header, not a download of every image.
        report = validate_dataset(uri, decode=False)
    except _UNREADABLE as exc:
        raise DatasetError(f"cannot read the dataset at {uri}: {exc.message}") from None
    return DatasetValidation(ok=report.ok, report=report.to_dict())
