"""/v1/downloads: files of a local-directory store, behind signed expiring links (the links
``GET /v1/jobs/{id}/artifacts`` and ``GET /v1/models/{name}/versions/{ref}/artifacts`` give)."""

from __future__ import annotations

from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from services.api import artifacts, model_files
from services.api.auth import State
from services.api.routes._docs import problems
from services.api.schemas import VERSION_PATTERN, DownloadQuery
from trainforge.access import TEAM_NAME
from trainforge.spec import NAME_PATTERN

router = APIRouter(prefix="/v1/downloads", tags=["artifacts"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string",
                                                          "format": "binary"}}},
    },
    **problems(403, 404, 422, 503),
}


def _raw_query(request: Request) -> str:
    """The query string as sent: a signed link is checked on its spelling, not on what a
    decoder made of it (services/api/artifacts.py, check_link)."""
    raw: bytes = request.scope.get("query_string", b"")
    return raw.decode("latin-1")


def _stream(reader: BinaryIO, size: int) -> StreamingResponse:
    return StreamingResponse(artifacts.iter_file(reader), media_type="application/octet-stream",
                             headers={"Content-Length": str(size)})


# Declared before the job route, whose first segment would also match "models" (a job id
# never does: ids start with "j").
@router.get(
    "/models/{team}/{name}/{version}/{file}",
    response_class=StreamingResponse,
    responses=_RESPONSES,
    summary="Download a model version's file through a link from "
            "GET /v1/models/{name}/versions/{ref}/artifacts",
)
def download_model_file(
    team: Annotated[str, Path(pattern=TEAM_NAME.pattern)],
    name: Annotated[str, Path(pattern=NAME_PATTERN)],
    version: Annotated[str, Path(pattern=VERSION_PATTERN)],
    file: Annotated[str, Path(max_length=255, description="file name, e.g. model.onnx")],
    state: State,
    request: Request,
    query: Annotated[DownloadQuery, Query()],  # documents and bounds the link's parameters
) -> StreamingResponse:
    return _stream(*model_files.open_download(state, team, name, version, file,
                                              _raw_query(request)))


@router.get(
    "/{id}/{name:path}",
    response_class=StreamingResponse,
    responses=_RESPONSES,
    summary="Download an artifact through a link from GET /v1/jobs/{id}/artifacts",
)
def download(
    job_id: Annotated[str, Path(alias="id")],
    name: Annotated[str, Path(description="artifact name, e.g. train/best.pt")],
    state: State,
    request: Request,
    query: Annotated[DownloadQuery, Query()],  # documents and bounds the link's parameters
) -> StreamingResponse:
    return _stream(*artifacts.open_download(state, job_id, name, _raw_query(request)))
