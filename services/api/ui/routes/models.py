"""The team's models, a model's versions, their files and aliases, and two versions side by
side."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from anyio import to_thread
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import ValidationError

from services.api import artifacts, model_files
from services.api import models as service
from services.api.auth import State
from services.api.schemas import VERSION_PATTERN, CompareRequest, Comparison
from services.api.ui.auth import CurrentViewer
from services.api.ui.rendering import PREFIX, page
from trainforge.errors import InvalidRequest
from trainforge.spec import NAME_PATTERN

router = APIRouter(prefix=f"{PREFIX}/models", include_in_schema=False)

ModelName = Annotated[str, Path(pattern=NAME_PATTERN)]


@router.get("", response_class=HTMLResponse)
def models(request: Request, state: State, viewer: CurrentViewer) -> HTMLResponse:
    return page(request, "models.html", viewer=viewer,
                models=service.list_models(state, viewer.team).items)


@router.get("/{name}", response_class=HTMLResponse)
def model(
    request: Request, state: State, viewer: CurrentViewer,
    name: ModelName,
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


@router.get("/{name}/versions/{version}/files/{file}")
async def file(name: ModelName, version: Annotated[str, Path(pattern=VERSION_PATTERN)],
               file: Annotated[str, Path(max_length=255)], state: State,
               viewer: CurrentViewer) -> StreamingResponse:
    """A file of one of the team's model versions, always as a download (the dashboard's
    session stands in for the API's signed link)."""
    reader, size = await to_thread.run_sync(model_files.open_file, state, viewer.team, name,
                                            version, file)
    headers = {"Content-Length": str(size), "Cache-Control": "private, max-age=300",
               "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file, safe='')}"}
    return StreamingResponse(artifacts.iter_file(reader), media_type="application/octet-stream",
                             headers=headers)
