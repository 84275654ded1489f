"""The dashboard's pages over the real app and job store: sign-in, CSRF, team isolation,
escaping and the headers every page carries."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api.ui.rendering import CONTENT_SECURITY_POLICY
from services.store import Database, creation, tokens
from services.store.domain import NewJob
from tests.fixtures.api import SPEC, claim_all, submit
from tests.ui.support import ORIGIN, csrf_of, parse, sign_in
from trainforge.spec import JobKind

SCHEDULE = {"cron": "0 3 * * *", "spec": {"name": "nightly",
                                          "dataset": {"uri": "s3://datasets/ppe/v3/"},
                                          "model": {"base": "yolov8n.yaml"}}}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def vision(make_token: Callable[[str], str]) -> str:
    return make_token("vision")


def test_login_sets_a_strict_http_only_cookie_without_the_token(
    client: TestClient, vision: str
) -> None:
    response = client.post("/ui/login", data={"token": vision, "next": "/ui/models"},
                           headers={"Origin": ORIGIN}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/models"
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "samesite"} <= attributes
    assert "samesite=strict" in cookie.lower() and "path=/ui" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP here; see the HTTPS test
    # The secret is everything after "tf_<id>_" (token_urlsafe may itself contain "_").
    secret = vision.split("_", 2)[2]
    assert vision not in cookie and secret not in cookie
    assert client.get("/ui/jobs").status_code == 200


def test_login_over_https_marks_the_cookie_secure(app: FastAPI, vision: str) -> None:
    with TestClient(app, base_url="https://testserver") as secure:
        response = secure.post("/ui/login", data={"token": vision},
                               headers={"Origin": "https://testserver"},
                               follow_redirects=False)
    assert response.status_code == 303
    assert "secure" in {p.strip().lower() for p in response.headers["set-cookie"].split(";")}


def test_no_session_redirects_to_the_login_page(client: TestClient) -> None:
    response = client.get("/ui/jobs?state=RUNNING", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login?next=%2Fui%2Fjobs%3Fstate%3DRUNNING"


def test_a_bad_token_or_a_forged_cookie_is_refused(client: TestClient, vision: str) -> None:
    bad = client.post("/ui/login", data={"token": vision[:-2] + "xx"},
                      headers={"Origin": ORIGIN}, follow_redirects=False)
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    assert "unknown, malformed or revoked" in bad.text
    sign_in(client, vision)
    value = client.cookies["tf_ui_session"]
    version, session_id, token_id, digest, expires, mac = value.split(".")
    client.cookies.set("tf_ui_session", ".".join([version, session_id, token_id, digest,
                                                  str(int(expires) + 3600), mac]), path="/ui")
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_a_revoked_token_ends_its_sessions(client: TestClient, vision: str, db: Database) -> None:
    sign_in(client, vision)
    assert client.get("/ui/jobs").status_code == 200
    with db.transaction() as session:
        tokens.revoke_token(session, vision)
    response = client.get("/ui/jobs", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login")


def test_login_only_redirects_inside_the_dashboard(client: TestClient, vision: str) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/v1/jobs"):
        response = client.post("/ui/login", data={"token": vision, "next": target},
                               headers={"Origin": ORIGIN}, follow_redirects=False)
        assert response.headers["location"] == "/ui/jobs", target


def test_cancel_through_the_dashboard_cancels_the_job(
    client: TestClient, vision: str
) -> None:
    job = submit(client, _bearer(vision))
    sign_in(client, vision)
    csrf = csrf_of(client, f"/ui/jobs/{job['id']}")
    response = client.post(f"/ui/jobs/{job['id']}/cancel", data={"csrf": csrf},
                           headers={"Origin": ORIGIN}, follow_redirects=False)
    assert response.status_code == 303
    assert client.get(f"/v1/jobs/{job['id']}", headers=_bearer(vision)).json()["state"] == \
        "CANCELLED"


@pytest.mark.parametrize("case", ["no token", "wrong token", "other session's token",
                                  "other origin", "no origin"])
def test_a_form_without_this_sessions_csrf_token_changes_nothing(
    client: TestClient, app: FastAPI, make_token: Callable[[str], str], case: str
) -> None:
    vision = make_token("vision")
    job = submit(client, _bearer(vision))
    sign_in(client, vision)
    good = csrf_of(client, f"/ui/jobs/{job['id']}")
    with TestClient(app) as other:
        sign_in(other, make_token("vision"))
        foreign = csrf_of(other, "/ui/jobs")
    data, headers = {"csrf": good}, {"Origin": ORIGIN}
    if case == "no token":
        data = {}
    elif case == "wrong token":
        data = {"csrf": good[:-3] + "abc"}
    elif case == "other session's token":
        data = {"csrf": foreign}
    elif case == "other origin":
        headers = {"Origin": "https://evil.example"}
    else:
        headers = {}
    response = client.post(f"/ui/jobs/{job['id']}/cancel", data=data, headers=headers,
                           follow_redirects=False)
    assert response.status_code == 403
    assert "nothing was changed" in response.text or "reload the page" in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert client.get(f"/v1/jobs/{job['id']}", headers=_bearer(vision)).json()["state"] == \
        "QUEUED"


def test_logout_needs_the_csrf_token_and_ends_the_session(client: TestClient, vision: str) -> None:
    sign_in(client, vision)
    assert client.post("/ui/logout", headers={"Origin": ORIGIN}).status_code == 403
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 200
    csrf = csrf_of(client, "/ui/jobs")
    client.post("/ui/logout", data={"csrf": csrf}, headers={"Origin": ORIGIN})
    assert client.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_schedule_pause_and_resume_need_csrf(client: TestClient, vision: str) -> None:
    created = client.post("/v1/schedules", json=SCHEDULE, headers=_bearer(vision)).json()
    sign_in(client, vision)
    page = f"/ui/schedules/{created['id']}"
    assert client.post(f"{page}/pause", data={"csrf": "x"},
                       headers={"Origin": ORIGIN}).status_code == 403
    assert not client.get(f"/v1/schedules/{created['id']}", headers=_bearer(vision)).json()[
        "paused"]
    csrf = csrf_of(client, page)
    assert client.post(f"{page}/pause", data={"csrf": csrf}, headers={"Origin": ORIGIN}
                       ).status_code == 200  # followed to the schedule's page
    assert client.get(f"/v1/schedules/{created['id']}", headers=_bearer(vision)).json()["paused"]
    assert "Resume" in client.get(page).text
    client.post(f"{page}/resume", data={"csrf": csrf}, headers={"Origin": ORIGIN})
    assert not client.get(f"/v1/schedules/{created['id']}", headers=_bearer(vision)).json()[
        "paused"]


def test_another_teams_job_and_schedule_are_not_found(
    client: TestClient, make_token: Callable[[str], str]
) -> None:
    vision = make_token("vision")
    job = submit(client, _bearer(vision))
    schedule = client.post("/v1/schedules", json=SCHEDULE, headers=_bearer(vision)).json()
    sign_in(client, make_token("retail"))
    csrf = csrf_of(client, "/ui/jobs")
    for path in (f"/ui/jobs/{job['id']}", f"/ui/jobs/{job['id']}/events",
                 f"/ui/jobs/{job['id']}/log", f"/ui/jobs/{job['id']}/files/spec.json",
                 f"/ui/schedules/{schedule['id']}", "/ui/models/ppe-detector"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html"), path
    for path in (f"/ui/jobs/{job['id']}/cancel", f"/ui/schedules/{schedule['id']}/pause"):
        assert client.post(path, data={"csrf": csrf}, headers={"Origin": ORIGIN}
                           ).status_code == 404, path
    assert client.get(f"/v1/jobs/{job['id']}", headers=_bearer(vision)).json()["state"] == \
        "QUEUED"
    assert job["id"] not in client.get("/ui/jobs").text


def _hostile_job(client: TestClient, db: Database, artifacts_dir: Path) -> str:
    """A job whose name, events and log hold markup (the store takes any name; the API's
    spec pattern is not what keeps the pages safe)."""
    with db.transaction() as session:
        creation.insert_job(session, NewJob(
            id="jhostile0001", team="vision", kind=JobKind.TRAIN,
            name="<script>alert(1)</script>", spec_uri="s3://x/spec.json", spec_sha256="0",
            gpus=0, max_attempts=1))
    token = claim_all(db)["jhostile0001"]
    client.post("/internal/v1/jobs/jhostile0001/events",
                json={"type": "message", "message": "<img src=x onerror=alert(2)>"},
                headers=_bearer(token))
    log = artifacts_dir / "jobs" / "jhostile0001" / "attempts" / "1" / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("\x1b[36m(worker)\x1b[0m epoch 1 </pre><script>alert(3)</script>\n")
    report = artifacts_dir / "jobs" / "jhostile0001" / "train" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"evaluation": {"split": "test", "metrics": {"mAP50": 0.5},
                                                 "per_class": [{"name": "<b>bold</b>",
                                                                "AP50-95": 0.25}]}}))
    return "jhostile0001"


def test_untrusted_text_is_escaped(
    client: TestClient, vision: str, db: Database, artifacts_dir: Path
) -> None:
    job_id = _hostile_job(client, db, artifacts_dir)
    sign_in(client, vision)
    pages = {path: client.get(path).text for path in
             ("/ui/jobs", f"/ui/jobs/{job_id}", f"/ui/jobs/{job_id}/log",
              "/ui/jobs?name=%3Cscript%3Ealert(4)%3C/script%3E")}
    for path, html in pages.items():
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "<b>bold" not in html, path
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["/ui/jobs"]
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages[f"/ui/jobs/{job_id}"]
    assert "(worker) epoch 1 &lt;/pre&gt;&lt;script&gt;alert(3)" in pages[f"/ui/jobs/{job_id}/log"]
    assert "&lt;b&gt;bold&lt;/b&gt;" in pages[f"/ui/jobs/{job_id}"]
    # The page's JSON for the charts cannot close its <script> either.
    assert "</script>" not in pages[f"/ui/jobs/{job_id}"].split('id="job-data">')[1].split(
        "</script>", 1)[0]


def _pages(client: TestClient, job_id: str, schedule_id: str) -> list[str]:
    return ["/ui/login", "/ui/jobs", f"/ui/jobs/{job_id}", "/ui/models", "/ui/schedules",
            f"/ui/schedules/{schedule_id}", "/ui/datasets", "/ui/jobs/jnosuchjob"]


def test_every_page_sends_the_csp_and_links_only_to_its_own_origin(
    client: TestClient, vision: str, db: Database, artifacts_dir: Path
) -> None:
    job_id = _hostile_job(client, db, artifacts_dir)
    schedule = client.post("/v1/schedules", json=SCHEDULE, headers=_bearer(vision)).json()
    sign_in(client, vision)
    for path in _pages(client, job_id, schedule["id"]):
        response = client.get(path)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert "default-src 'self'" in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        found = parse(response.text)
        assert found.urls, path
        for url in found.urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and url.startswith("/"), (path, url)
        for script in found.scripts:  # no inline code: files, or JSON data the CSP ignores
            assert script.get("src") or script.get("type") == "application/json", (path, script)
    assert client.get("/ui/static/app.js").headers["content-security-policy"]


def test_the_api_keeps_its_problem_json_and_schema(client: TestClient) -> None:
    assert client.get("/v1/jobs/jx").headers["content-type"] == "application/problem+json"
    assert "content-security-policy" not in client.get("/healthz").headers
    assert not [p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/ui")]


def test_job_page_shows_curves_report_and_artifacts(
    client: TestClient, vision: str, db: Database, artifacts_dir: Path
) -> None:
    job = submit(client, _bearer(vision))
    token = claim_all(db)[job["id"]]
    for epoch, value in ((1, 0.11), (2, 0.22)):
        client.post(f"/internal/v1/jobs/{job['id']}/events", headers=_bearer(token),
                    json={"type": "progress", "epoch": epoch, "epochs": 3,
                          "metrics": {"metrics/mAP50-95(B)": value, "train/box_loss": 1.5}})
    train = artifacts_dir / "jobs" / job["id"] / "train"
    train.mkdir(parents=True)
    (train / "results.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    (train / "report.json").write_text(json.dumps({"evaluation": {
        "split": "test", "metrics": {"mAP50-95": 0.3},
        "per_class": [{"name": "circle", "images": 4, "instances": 9, "AP50": 0.9,
                       "AP50-95": 0.61}]}}))
    sign_in(client, vision)
    html = client.get(f"/ui/jobs/{job['id']}").text
    data = json.loads(html.split('id="job-data">')[1].split("</script>")[0])
    assert data["curves"]["epoch"] == [1.0, 2.0]
    assert data["curves"]["metrics/mAP50-95(B)"] == [0.11, 0.22]
    assert 'data-epochs="2"' in html
    assert ">circle</th>" in html and ">0.610<" in html
    assert f'src="/ui/jobs/{job["id"]}/files/train/results.png"' in html
    image = client.get(f"/ui/jobs/{job['id']}/files/train/results.png")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    spec = client.get(f"/ui/jobs/{job['id']}/files/spec.json")
    assert spec.headers["content-disposition"].startswith("attachment")
    listing = client.get("/ui/jobs").text
    assert ">0.220<" in listing  # the best epoch's mAP50-95, not only the latest
    assert client.get("/ui/jobs?state=SUCCEEDED").text.count(job["id"]) == 0
    assert client.get("/ui/jobs?state=NOPE").status_code == 422


def test_dataset_check_renders_the_validation_report(
    client: TestClient, vision: str, tmp_path: Path
) -> None:
    from trainforge.datasets import synth

    synth(tmp_path / "shapes", classes=2, train=4, val=2, test=2, imgsz=64, seed=0)
    sign_in(client, vision)
    csrf = csrf_of(client, "/ui/datasets")
    uri = f"file://{tmp_path / 'shapes'}/"
    assert client.post("/ui/datasets", data={"uri": uri},
                       headers={"Origin": ORIGIN}).status_code == 403
    html = client.post("/ui/datasets", data={"uri": uri, "csrf": csrf},
                       headers={"Origin": ORIGIN}).text
    assert "valid</span>" in html and 'id="splits"' in html
    refused = client.post("/ui/datasets", data={"uri": "s3://elsewhere/x/", "csrf": csrf},
                          headers={"Origin": ORIGIN})
    assert refused.status_code == 403 and 'class="alert"' in refused.text


def test_sweep_page_shows_live_trials_then_the_reports_table_and_scatter(
    client: TestClient, vision: str, db: Database, artifacts_dir: Path
) -> None:
    sweep = {**SPEC, "name": "ppe-sweep", "kind": "sweep",
             "sweep": {"trials": 3, "space": {"lr0": {"loguniform": [1e-4, 1e-1]}}}}
    job = submit(client, _bearer(vision), spec=sweep)
    token = claim_all(db)[job["id"]]
    client.post(f"/internal/v1/jobs/{job['id']}/events", headers=_bearer(token),
                json={"type": "progress", "epoch": 2, "epochs": 3, "trial": "t_001",
                      "metrics": {"metrics/mAP50-95(B)": 0.42}})
    sign_in(client, vision)
    live = client.get(f"/ui/jobs/{job['id']}").text
    assert "t_001" in live and ">0.420<" in live
    trials = [{"trial_id": f"t_00{i}", "config": {"lr0": lr0, "optimizer": "SGD"},
               "status": "finished", "epochs_run": epochs, "best_map50_95": score,
               "stopped_early": epochs < 3, "error": None}
              for i, (lr0, epochs, score) in enumerate(
                  ((0.0002, 1, 0.12), (0.003, 3, 0.44), (0.05, 3, 0.31)), start=1)]
    report = artifacts_dir / "jobs" / job["id"] / "train" / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"sweep": {"trials": trials}}))
    html = client.get(f"/ui/jobs/{job['id']}").text
    table = html.split('id="trials"')[1].split("</table>")[0]
    assert table.count("<tr>") == 4  # the header and one row a trial
    assert "<code>lr0</code>=0.0002" in table and ">yes<" in table  # t_001 stopped early
    svg = html.split("<svg")[1].split("</svg>")[0]
    assert svg.count("<circle") == 3 and svg.count('class="stopped"') == 1
    assert "(log scale)" in svg  # 0.0002 … 0.05 spans more than 20×
