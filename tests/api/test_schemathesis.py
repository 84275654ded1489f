"""Property-based API testing with schemathesis over the OpenAPI document.

Every operation gets ≥ 50 generated requests (valid and invalid data), authenticated as a team
(or as a job for the internal route), half of them aimed at a job (or, for schedule routes, a
schedule; for model routes, a published version) that really exists. Checks:
no server error, statuses/content types/headers/bodies as documented, invalid data refused,
and no operation that should need a token works without one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api import artifacts, model_files, schedules
from services.api.jobs import submit_async
from services.api.openapi import document
from services.api.schemas import JobSubmission, ScheduleCreate
from services.api.settings import ApiSettings, TeamLimits
from services.store import Database
from tests.fixtures.api import SECRET, SPEC, claim_all
from trainforge.registry import publish

pytestmark = pytest.mark.slow  # a fuzzer: every operation, 50 examples each

EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]
OPERATIONS = [
    (path, method.upper())
    for path, operations in document()["paths"].items()
    for method in operations
]


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_operation_conforms_to_its_schema(
    path: str, method: str, app: FastAPI, settings: ApiSettings, db: Database,
    make_token: Callable[[str], str], request: pytest.FixtureRequest, tmp_path: Path,
) -> None:
    if path == "/v1/datasets/validate":
        # As in production: only s3:// URIs, answered by the loopback S3 server.
        request.getfixturevalue("s3_server")
        settings.embedded = False
    # Streams must end: no dispatcher runs here, so jobs never finish by themselves.
    settings.stream_max_s = 0.1
    settings.default_limits = TeamLimits(max_active_jobs=10)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operation = schema[path][method]
    team_token = make_token("fuzz")
    body = JobSubmission.model_validate({"spec": SPEC})
    job_id = asyncio.run(submit_async(app.state.trainforge, "fuzz", body, None)).body["id"]
    job_token = claim_all(db)[job_id]
    if path.startswith("/v1/schedules/"):
        schedule = ScheduleCreate.model_validate({"cron": "0 3 * * *", "spec": SPEC})
        job_id = schedules.create(app.state.trainforge, "fuzz", schedule).id
    expires = int(time.time()) + 600
    model_link = _published_model(app, settings, tmp_path) if "models" in path else {}
    token = job_token if path.startswith("/internal") else team_token
    calls: dict[str, int] = {}
    # The token is fixed (not generated); `ignored_auth` separately checks requests without it.
    auth = {"Authorization": f"Bearer {token}"}

    @given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, headers=auth),
            operation.as_strategy(GenerationMode.NEGATIVE, headers=auth),
        ),
        aim_at_real_job=st.booleans(),
        # Lets operations without parameters (probes, /metrics) get their 50 calls too.
        _nonce=st.integers(min_value=0, max_value=2**31),
    )
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, aim_at_real_job: bool, _nonce: int) -> None:
        if aim_at_real_job and "id" in (case.path_parameters or {}):
            case.path_parameters["id"] = job_id
            if path.startswith("/v1/downloads"):
                case.path_parameters["name"] = "spec.json"
                case.query = {"expires": expires,
                              "signature": artifacts.signature(SECRET, job_id, "spec.json",
                                                               expires)}
        if aim_at_real_job and path.startswith("/v1/models/"):
            case.path_parameters["name"] = "fuzzed"
            if "ref" in case.path_parameters:
                case.path_parameters["ref"] = "j1"
        if aim_at_real_job and "file" in (case.path_parameters or {}):
            case.path_parameters.update(model_link["path"])
            case.query = model_link["query"]
        response = case.call_and_validate(headers=auth, checks=CHECKS)
        calls[str(response.status_code)] = calls.get(str(response.status_code), 0) + 1

    run()
    print(f"{method} {path}: {sum(calls.values())} requests, statuses {sorted(calls.items())}")
    assert sum(calls.values()) >= EXAMPLES


def _published_model(app: FastAPI, settings: ApiSettings, tmp_path: Path) -> dict[str, Any]:
    """Publish team fuzz's ``fuzzed@j1``; returns the path parameters and query of a real
    link to its model.onnx."""
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    publish(settings.team_models_uri("fuzz"), "fuzzed", "j1",
            {"model.onnx": tmp_path / "model.onnx"},
            {"input_shape": [1, 3, 64, 64], "class_names": ["a"],
             "gates": {"onnx": {"status": "passed"}}})
    listing = model_files.list_files(app.state.trainforge, "fuzz", "fuzzed", "j1",
                                     "http://testserver")
    url = urlparse(next(i.url for i in listing.items if i.name == "model.onnx"))
    team, name, version, file = (unquote(p) for p in url.path.split("/")[-4:])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    return {"path": {"team": team, "name": name, "version": version, "file": file},
            "query": {"expires": int(query["expires"]), "signature": query["signature"]}}
