"""The dashboard in a real browser (Debian's headless chromium, driven by Playwright) against
a real `trainforge serve` training a small detector on the CPU.

Team dev signs in, watches its running job's curves grow over server-sent events without a
reload, then reads the finished job's per-class report; another team's session gets 404 on
that job. Every request the pages make stays on the server's origin. Screenshots of each
page land in test-artifacts/ui/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.store import Database, tokens
from tests.fixtures.embedded import ServeProcess, dev_client, embedded_env
from trainforge.datasets import synth

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
SPEC: dict[str, Any] = {
    "name": "shapes-ui", "model": {"base": "yolov8n.yaml"}, "retries": 0,
    "resources": {"gpus": 0, "cpus": 1},
    "train": {"epochs": 8, "imgsz": 64, "batch": 8, "nbs": 8, "workers": 0, "warmup_epochs": 0,
              "optimizer": "SGD", "lr0": 0.02, "amp": False, "seed": 0,
              "augment": {"mosaic": 0.0, "close_mosaic": 0}},
}
WAIT_MS = 240_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium from Debian; a missing one fails the test (it is a set-up step)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make setup` (scripts/setup.sh installs "
                    "Debian's chromium for these tests)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright for Python is missing: run `make setup`")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def _wait_for_state(client: httpx.Client, job_id: str, wanted: set[str], log: Path,
                    timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = str(client.get(f"/v1/jobs/{job_id}").json()["state"])
        if state in wanted:
            return state
        assert state not in {"FAILED", "CANCELLED"}, client.get(f"/v1/jobs/{job_id}/logs").text[
            -4000:]
        assert time.monotonic() < deadline, f"{job_id} still {state}: {log.read_text()[-4000:]}"
        time.sleep(0.5)


def _sign_in(context: Any, url: str, token: str, shot: str | None = None) -> Any:
    page = context.new_page()
    page.goto(f"{url}/ui/jobs")  # no session yet: the login page
    assert page.url.startswith(f"{url}/ui/login"), page.url
    if shot:
        page.screenshot(path=str(SHOTS / shot))
    page.get_by_label("Team token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/ui/jobs", timeout=30_000)
    return page


def _epochs(page: Any) -> int:
    return int(page.get_attribute("#chart-map", "data-epochs"))


def test_a_team_watches_its_job_train_and_reads_its_report(
        browser: Any, serve_process: ServeProcess, tmp_path: Path) -> None:
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    home, data, log = tmp_path / "home", tmp_path / "data" / "shapes", tmp_path / "serve.log"
    synth(data, classes=3, train=32, val=8, test=8, imgsz=64, seed=0)
    with serve_process(embedded_env(home), log) as url:
        api = dev_client(url, home)
        dev_token = (home / "dev-token").read_text().strip()
        database = Database(f"sqlite:///{home.resolve() / 'trainforge.db'}")
        with database.transaction() as session:
            other_token = tokens.create_token(session, "other")[1]
        database.dispose()
        requests: list[str] = []
        created = api.post("/v1/jobs", json={"spec": {**SPEC,
                                                      "dataset": {"uri": f"file://{data}/"}}})
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        try:
            _as_two_teams(browser, api, url, log, job_id, dev_token, other_token, data, requests)
        finally:  # a failed check must not leave the server waiting on a training job
            api.post(f"/v1/jobs/{job_id}/cancel")
    assert requests, "the browser made no request"
    foreign = [r for r in requests if not r.startswith(url + "/")]
    assert not foreign, foreign


def _as_two_teams(browser: Any, api: httpx.Client, url: str, log: Path, job_id: str,
                  dev_token: str, other_token: str, data: Path, requests: list[str]) -> None:
    """Team dev's pages at desktop and phone width, then another team's view of the job."""
    api.post("/v1/schedules", json={"cron": "0 3 * * *", "paused": True,
                                    "spec": {**SPEC, "dataset": {"uri": f"file://{data}/"}}})

    # A zone other than the server's UTC: the pages must show times in the browser's own.
    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  timezone_id="Europe/Berlin", locale="en-US")
    context.on("request", lambda request: requests.append(request.url))
    failed: list[str] = []  # a missing script, style, image or favicon of team dev's pages
    context.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400
               else None)
    page = _sign_in(context, url, dev_token, shot="login.png")

    _wait_for_state(api, job_id, {"RUNNING"}, log, timeout_s=180)
    page.goto(f"{url}/ui/jobs/{job_id}")
    first = _epochs(page)
    assert first < SPEC["train"]["epochs"], "the job ended before its page could watch it"
    page.evaluate("window.tfNotReloaded = true")
    # Functions, not expression strings: the page's CSP forbids eval, which Playwright
    # would use for a string.
    page.wait_for_function(
        "n => Number(document.getElementById('chart-map').dataset.epochs) >= n",
        arg=first + 2, timeout=WAIT_MS)
    assert page.evaluate("window.tfNotReloaded") is True  # the same document: no reload
    # uPlot drew what the attribute says: one x value per epoch in the chart's data.
    assert page.locator("#chart-map .u-over").count() == 1
    page.wait_for_function(
        "() => document.getElementById('log').textContent.trim() !== 'loading…'",
        timeout=30_000)
    page.screenshot(path=str(SHOTS / "job-running.png"))
    page.goto(f"{url}/ui/jobs")
    page.screenshot(path=str(SHOTS / "jobs.png"))

    assert _wait_for_state(api, job_id, {"SUCCEEDED"}, log, timeout_s=300) == "SUCCEEDED"
    page.goto(f"{url}/ui/jobs/{job_id}")
    rows = page.locator("#per-class tbody tr")
    assert rows.count() == 3
    assert sorted(rows.locator("th").all_inner_texts()) == ["circle", "square", "triangle"]
    assert page.locator(".plots img").count() >= 1
    assert page.locator("#chart-map").get_attribute("data-epochs") == str(
        SPEC["train"]["epochs"])
    page.screenshot(path=str(SHOTS / "job-finished.png"), full_page=True)

    page.goto(f"{url}/ui/models/shapes-ui?challenger={job_id}&champion={job_id}")
    assert page.locator("#per-class-deltas tbody tr").count() == 3
    page.goto(f"{url}/ui/jobs")
    created_at = page.locator("#jobs-table time").first
    assert created_at.get_attribute("datetime").endswith("+00:00")
    assert re.search(r"GMT\+[12]\b", created_at.inner_text())  # Berlin: CET or CEST
    page.select_option("#f-state", "FAILED")  # htmx swaps the table, under the CSP
    page.wait_for_function("() => document.querySelector('#jobs-table').textContent"
                           ".includes('match these filters')", timeout=30_000)
    assert "state=FAILED" in page.url
    page.select_option("#f-state", "SUCCEEDED")
    page.wait_for_selector(f"#jobs-table a[href='/ui/jobs/{job_id}']", timeout=30_000)
    page.goto(f"{url}/ui/models")
    page.screenshot(path=str(SHOTS / "models.png"))
    page.goto(f"{url}/ui/schedules")
    page.screenshot(path=str(SHOTS / "schedules.png"))
    page.goto(f"{url}/ui/datasets")
    page.get_by_label("Dataset URI").fill(f"file://{data}/")
    page.get_by_role("button", name="Check").click()
    page.wait_for_selector("#splits", timeout=60_000)
    page.screenshot(path=str(SHOTS / "dataset-check.png"), full_page=True)

    phone = browser.new_context(viewport={"width": 390, "height": 844},
                                storage_state=context.storage_state())
    phone.on("request", lambda request: requests.append(request.url))
    phone.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400
             else None)
    small = phone.new_page()
    small.goto(f"{url}/ui/jobs/{job_id}")
    # Wide tables scroll inside their own box; the page itself never scrolls sideways.
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=str(SHOTS / "phone-job.png"), full_page=True)
    small.goto(f"{url}/ui/jobs")
    small.screenshot(path=str(SHOTS / "phone-jobs.png"))
    phone.close()

    intruder = browser.new_context()
    intruder.on("request", lambda request: requests.append(request.url))
    other = _sign_in(intruder, url, other_token)
    response = other.goto(f"{url}/ui/jobs/{job_id}")
    assert response is not None and response.status == 404
    assert other.locator("#job-data, #chart-map, #log").count() == 0  # nothing of the job
    intruder.close()
    context.close()
    assert not failed, failed
