"""Dataset validation for the API (trainforge.datasets does the work)."""

from __future__ import annotations

from services.api.schemas import DatasetValidation
from services.api.state import AppState
from trainforge.errors import (
    BucketNotFound,
    DatasetError,
    ObjectNotFound,
    StorageAccessDenied,
    StorageCredentialsMissing,
)

#: Storage errors that mean "this URI cannot be read as given" (the caller can fix it), as
#: opposed to the object store being down (503).
_UNREADABLE = (BucketNotFound, ObjectNotFound, StorageAccessDenied, StorageCredentialsMissing)


def validate(state: AppState, team: str, uri: str) -> DatasetValidation:
    """Validate the dataset at ``uri`` (labels and image headers; images are not decoded).

    The team's storage access policy applies exactly as to a job's ``dataset.uri``: the API
    reads with its own credentials, so a URI the team may not read is refused before anything
    is read (and outside embedded mode no local path is ever read on a caller's behalf).

    Raises:
        LocationInvalid: an ambiguous spelling (``..``, ``//``, percent-encoding…): 422.
        AccessDenied: a location the team may not read: 403.
        DatasetError: nothing readable at the URI (no such bucket or prefix, access denied).
        StorageError: the object store failed (503).
    """
    location = state.settings.access_for(team).dataset(uri)
    # Imported here: the toolkit (Pillow, image readers) loads only when a validation is asked.
    from trainforge.datasets import validate as validate_dataset

    try:
        # decode=False: one ranged GET per image header, not a download of every image.
        report = validate_dataset(location, decode=False)
    except _UNREADABLE as exc:
        raise DatasetError(f"cannot read the dataset at {uri}: {exc.message}") from None
    return DatasetValidation(ok=report.ok, report=report.to_dict())
