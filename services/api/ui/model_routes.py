"""The team's models, a model's versions and aliases, and two versions side by side."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from services.api import models as service
from services.api.auth import State
from services.api.schemas import CompareRequest, Comparison
from services.api.ui.auth import CurrentViewer
from services.api.ui.rendering import PREFIX, page
from trainforge.errors import InvalidRequest
from trainforge.spec import NAME_PATTERN

router = APIRouter(prefix=f"{PREFIX}/models", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
def models(request: Request, state: State, viewer: CurrentViewer) -> HTMLResponse:
    return page(request, "models.html", viewer=viewer,
                models=service.list_models(state, viewer.team).items)


@router.get("/{name}", response_class=HTMLResponse)
def model(
    request: Request, state: State, viewer: CurrentViewer,
    name: Annotated[str, Path(pattern=NAME_PATTERN)],
    challenger: Annotated[str, Query(max_length=128)] = "",
    champion: Annotated[str, Query(max_length=128)] = "",
) -> HTMLResponse:
    """The model's versions; with ``challenger`` and ``champion``, the comparison the API's
    ``POST /v1/models/{name}/compare`` answers (read-only, hence a GET form here)."""
    detail = service.get_model(state, viewer.team, name)
    comparison: Comparison | None = None
    refused: str | None = None
    if challenger and champion:
        try:
            body = CompareRequest(challenger=challenger, champion=champion)
            comparison = service.compare(state, viewer.team, name, body)
        except ValidationError:
            refused = "a version is a job id (j…) or an alias name"
        except InvalidRequest as exc:  # not comparable: said beside the form, not as a 422
            refused = exc.message
    return page(request, "model.html", viewer=viewer, model=detail, comparison=comparison,
                refused=refused, challenger=challenger, champion=champion)
