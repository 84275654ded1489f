"""Dataset check: a URI in, the validation report of ``POST /v1/datasets/validate`` out."""

from __future__ import annotations

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from services.api import datasets
from services.api.auth import State
from services.api.errors import status_for
from services.api.ui.auth import CheckedForm, CurrentViewer
from services.api.ui.rendering import PREFIX, page
from trainforge.errors import TrainforgeError

router = APIRouter(prefix=f"{PREFIX}/datasets", include_in_schema=False)

MAX_URI = 2048


@router.get("", response_class=HTMLResponse)
def dataset_form(request: Request, viewer: CurrentViewer) -> HTMLResponse:
    return page(request, "dataset.html", viewer=viewer, uri="", result=None, refused=None)


@router.post("", response_class=HTMLResponse)
async def dataset_check(request: Request, state: State, viewer: CurrentViewer,
                        form: CheckedForm) -> HTMLResponse:
    """A POST with a CSRF token although it changes nothing: it makes the server read the
    location on the team's behalf, which another site must not be able to trigger."""
    uri = form.get("uri", "").strip()[:MAX_URI]
    try:
        result = await to_thread.run_sync(datasets.validate, state, viewer.team, uri)
    except TrainforgeError as exc:
        status = status_for(exc)
        if status >= 500:
            raise  # the store is down: the error page, as for every other page
        # Refusals (access policy, nothing readable there, a malformed URI) go beside the form.
        return page(request, "dataset.html", status_code=status, viewer=viewer, uri=uri,
                    result=None, refused=exc.message)
    return page(request, "dataset.html", viewer=viewer, uri=uri, result=result, refused=None)
