"""What a team reads back about its jobs names nothing inside the service: no path of the
server's home or artifacts store, no ``file://`` or bucket location (a job response once
carried ``spec_uri: file:///home/<user>/.trainforge/artifacts/jobs/<id>/spec.json``)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.api.settings import ApiSettings
from tests.fixtures.api import submit


def test_job_answers_name_no_server_location(
    client: TestClient, auth: dict[str, str], settings: ApiSettings, artifacts_dir: Path,
) -> None:
    job = submit(client, auth)
    answers = {
        "submission": str(job),
        "job": client.get(f"/v1/jobs/{job['id']}", headers=auth).text,
        "list": client.get("/v1/jobs", headers=auth).text,
        "events": client.get(f"/v1/jobs/{job['id']}/events", headers=auth).text,
        "artifacts": client.get(f"/v1/jobs/{job['id']}/artifacts", headers=auth).text,
    }
    internal = (str(artifacts_dir), str(settings.home), "file://", settings.resolved_artifacts_uri)
    for what, body in answers.items():
        named = [place for place in internal if place in body]
        assert named == [], f"the {what} answer names {named}: {body[:500]}"
    # What replaced the location: the spec's name among the job's own artifacts.
    assert job["spec_artifact"] == "spec.json"
    assert "spec.json" in answers["artifacts"]
