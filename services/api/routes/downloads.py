"""/v1/downloads: artifacts of a local-directory store, behind signed expiring links."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse

from services.api import artifacts
from services.api.auth import State
from services.api.routes._docs import problems
from services.api.schemas import DownloadQuery

router = APIRouter(prefix="/v1/downloads", tags=["artifacts"])


@router.get(
    "/{id}/{name:path}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The artifact's bytes",
            "content": {"application/octet-stream": {"schema": {"type": "string",
                                                              "format": "binary"}}},
        },
        **problems(403, 404, 422, 503),
    },
    summary="Download an artifact through a link from GET /v1/jobs/{id}/artifacts",
)
def download(
    job_id: Annotated[str, Path(alias="id")],
    name: Annotated[str, Path(description="artifact name, e.g. train/best.pt")],
    state: State,
    query: Annotated[DownloadQuery, Query()],
) -> StreamingResponse:
    reader, size = artifacts.open_download(state, job_id, name, query.expires, query.signature)
    return StreamingResponse(
        artifacts.iter_file(reader),
        media_type="application/octet-stream",
        headers={"Content-Length": str(size)},
    )
