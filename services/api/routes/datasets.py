"""/v1/datasets/validate: check a dataset before spending GPU time on it."""

from __future__ import annotations

from fastapi import APIRouter

from services.api import datasets
from services.api.auth import State, Team
from services.api.routes._docs import problems
from services.api.schemas import DatasetValidation, DatasetValidationRequest

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.post(
    "/validate",
    response_model=DatasetValidation,
    responses=problems(400, 401, 403, 413, 422, 503),
    summary="Validate a YOLO dataset (data.yaml, splits, labels) by URI",
)
def validate_dataset(body: DatasetValidationRequest, state: State, team: Team) -> DatasetValidation:
    return datasets.validate(state, team, body.uri)
