"""/metrics: the shared metric names, valid for promtool, counting what happened."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from services.store import Database, dispatch
from tests.fixtures.api import claim_all, submit

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_promtool_finds_no_problem(client: TestClient, auth: dict[str, str]) -> None:
    if not shutil.which(PROMTOOL):
        pytest.fail(f"promtool not found at {PROMTOOL} (Debian package prometheus)")
    submit(client, auth)
    client.get("/v1/jobs/nope", headers=auth)
    text = client.get("/metrics").text
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and \
        not result.stderr.strip(), result.stdout + result.stderr


def test_lifecycle_and_http_metrics_count_what_happened(
    client: TestClient, auth: dict[str, str], db: Database
) -> None:
    before = _samples(client.get("/metrics").text)
    job = submit(client, auth)
    cancelled = submit(client, auth)
    client.post(f"/v1/jobs/{cancelled['id']}/cancel", headers=auth)
    claim_all(db)
    from datetime import timedelta

    with db.transaction() as session:
        dispatch.record_launch(session, job["id"], 1, "h")
        dispatch.settle(session, job["id"], 1, succeeded=True, message="exited 0",
                        retry_delay=timedelta(0))
    after = _samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("trainforge_jobs_submitted_total", kind="train") == 2
    assert delta("trainforge_jobs_finished_total", kind="train", state="CANCELLED") == 1
    assert delta("trainforge_jobs_finished_total", kind="train", state="SUCCEEDED") == 1
    assert delta("trainforge_job_queue_wait_seconds_count", kind="train") == 1
    assert delta("trainforge_job_duration_seconds_count", kind="train", state="SUCCEEDED") == 1
    # Cancelled while queued: it never started, so it has no duration.
    assert delta("trainforge_job_duration_seconds_count", kind="train", state="CANCELLED") == 0
    assert after[("trainforge_jobs", (("state", "SUCCEEDED"),))] == 1
    assert after[("trainforge_jobs", (("state", "CANCELLED"),))] == 1
    assert after[("trainforge_jobs", (("state", "QUEUED"),))] == 0
    assert delta("trainforge_http_request_duration_seconds_count",
                 method="POST", route="/v1/jobs", status="201") == 2
    assert delta("trainforge_http_request_duration_seconds_count",
                 method="POST", route="/v1/jobs/{id}/cancel", status="200") == 1
