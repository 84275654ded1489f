"""/v1/models: the team's models, their versions, aliases and promotion history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from services.api import model_files
from services.api import models as service
from services.api.auth import State, Team
from services.api.routes._docs import problems
from services.api.schemas import (
    VERSION_PATTERN,
    AliasMoveOut,
    CompareRequest,
    Comparison,
    ModelArtifactList,
    ModelDetail,
    ModelList,
    ModelVersionDetail,
    PromoteRequest,
)
from trainforge.spec import ALIAS_PATTERN, NAME_PATTERN

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Annotated[str, Path(description="model name (the job spec's name)",
                                pattern=NAME_PATTERN)]
VersionRef = Annotated[str, Path(description="a version id, an alias (champion…) or latest",
                                 pattern=VERSION_PATTERN)]
AliasName = Annotated[str, Path(description="alias name, e.g. champion",
                                pattern=ALIAS_PATTERN)]


@router.get("", response_model=ModelList, responses=problems(401, 503),
            summary="List the team's models with their aliases")
def list_models(state: State, team: Team) -> ModelList:
    return service.list_models(state, team)


@router.get("/{name}", response_model=ModelDetail, responses=problems(401, 404, 422, 503),
            summary="A model: versions with scores and promotion decisions, aliases, history")
def get_model(name: ModelName, state: State, team: Team) -> ModelDetail:
    return service.get_model(state, team, name)


@router.get(
    "/{name}/versions/{ref}",
    response_model=ModelVersionDetail,
    responses=problems(401, 404, 422, 503),
    summary="A version by id, alias or latest: manifest, scores, gates, lineage, verdict",
)
def get_version(name: ModelName, ref: VersionRef, state: State, team: Team
                ) -> ModelVersionDetail:
    return service.get_version(state, team, name, ref)


@router.get(
    "/{name}/versions/{ref}/artifacts",
    response_model=ModelArtifactList,
    responses=problems(401, 404, 422, 503),
    summary="A version's files (manifest.json included) with download URLs (valid ≤ 15 min), "
            "all of the one version the ref resolved to",
)
def version_artifacts(request: Request, name: ModelName, ref: VersionRef, state: State,
                      team: Team) -> ModelArtifactList:
    return model_files.list_files(state, team, name, ref, str(request.base_url))


@router.post(
    "/{name}/aliases/{alias}",
    response_model=AliasMoveOut,
    responses=problems(400, 401, 404, 409, 413, 422, 503),
    summary="Point an alias at a version (promote, or roll back to an older version)",
)
def promote(name: ModelName, alias: AliasName, body: PromoteRequest, state: State,
            team: Team) -> AliasMoveOut:
    return service.promote(state, team, name, alias, body)


@router.post(
    "/{name}/compare",
    response_model=Comparison,
    responses=problems(400, 401, 404, 413, 422, 503),
    summary="Compare two versions on their recorded held-out scores, with the policy's verdict",
)
def compare(name: ModelName, body: CompareRequest, state: State, team: Team) -> Comparison:
    return service.compare(state, team, name, body)
