"""A model version through the API: by id, alias or latest; its files behind signed links,
all of one version even while the alias moves; pulled and verified by the Python client; and
nothing of another team's (a 404, exactly as for a missing model)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.api import create_app
from services.api.settings import ApiSettings
from services.store import Database
from trainforge import aliases
from trainforge.client import ApiError, Client
from trainforge.registry import publish

FILES = ("best.pt", "model.onnx", "report.json")


def _publish(root: str, tmp_path: Path, version: str, *, name: str = "ppe") -> dict[str, bytes]:
    """Publish ``name@version`` with files whose bytes name the version; returns them."""
    contents = {f: f"{f} of {version} ".encode() * 200 for f in FILES}
    folder = tmp_path / version
    folder.mkdir(exist_ok=True)
    for file, body in contents.items():
        (folder / file).write_bytes(body)
    evaluation = {"split": "test", "note": "held out",
                  "metrics": {"mAP50": 0.8, "mAP50-95": 0.6},
                  "per_class": [{"name": "helmet", "images": 4, "AP50": 0.8, "AP50-95": 0.6}]}
    publish(root, name, version, {f: folder / f for f in FILES},
            {"source_job_id": version, "evaluation": evaluation, "metrics": evaluation["metrics"],
             "dataset": {"uri": "s3://datasets/ppe/", "fingerprint": "f" * 64},
             "base": "registry://ppe@champion", "input_shape": [1, 3, 64, 64],
             "class_names": ["helmet"],
             "gates": {"onnx": {"status": "passed", "map_delta": 0.001}}})
    return contents


@pytest.fixture()
def team_a(settings: ApiSettings, tmp_path: Path, make_token: Callable[[str], str]
           ) -> dict[str, str]:
    """Team A's bearer header; ppe@j1 and ppe@j2 published, champion → j1."""
    root = settings.team_models_uri("team-a")
    for version in ("j1", "j2"):
        _publish(root, tmp_path, version)
    aliases.move(root, "ppe", "champion", "j1", actor="test", reason="first")
    return {"Authorization": f"Bearer {make_token('team-a')}"}


def _version_of(url: str) -> str:
    """The version an API-served model link opens (…/models/<team>/<name>/<version>/<file>)."""
    return urlparse(url).path.split("/")[-2]


def test_a_version_by_id_alias_or_latest(client: TestClient, team_a: dict[str, str]) -> None:
    by_alias = client.get("/v1/models/ppe/versions/champion", headers=team_a)
    assert by_alias.status_code == 200, by_alias.text
    detail = by_alias.json()
    assert (detail["ref"], detail["version"], detail["aliases"]) == ("champion", "j1",
                                                                     ["champion"])
    assert detail["base"] == "registry://ppe@champion"
    assert detail["dataset_fingerprint"] == "f" * 64 and detail["source_job_id"] == "j1"
    assert detail["gates"]["onnx"] == {"status": "passed", "map_delta": 0.001}
    assert detail["metrics"] == {"mAP50": 0.8, "mAP50-95": 0.6}
    assert detail["evaluation"]["per_class"][0]["name"] == "helmet"
    files = {f["name"]: f for f in detail["files"]}
    assert set(files) == set(FILES)
    assert files["best.pt"]["sha256"] == hashlib.sha256(b"best.pt of j1 " * 200).hexdigest()
    assert detail["manifest"]["artifacts"] == detail["files"]
    assert detail["promotion"] is None
    latest = client.get("/v1/models/ppe/versions/latest", headers=team_a).json()
    assert (latest["ref"], latest["version"], latest["aliases"]) == ("latest", "j2", [])
    by_id = client.get("/v1/models/ppe/versions/j2", headers=team_a).json()
    assert by_id["version"] == "j2" and by_id["ref"] == "j2"
    # The model's page lists every version's files too.
    versions = client.get("/v1/models/ppe", headers=team_a).json()["versions"]
    assert [f["name"] for f in versions[0]["files"]] == list(FILES)


@pytest.mark.parametrize(("path", "status"), [
    ("/v1/models/ppe/versions/staging", 404),           # an alias never set
    ("/v1/models/ppe/versions/j9", 404),                # a version never published
    ("/v1/models/nope/versions/latest", 404),
    ("/v1/models/ppe/versions/j9/artifacts", 404),
    ("/v1/models/ppe/versions/j1%20x", 422),
    ("/v1/models/ppe/versions/-j1/artifacts", 422),
])
def test_missing_or_malformed_refs(client: TestClient, team_a: dict[str, str], path: str,
                                   status: int) -> None:
    response = client.get(path, headers=team_a)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("suffix", ["", "/artifacts"])
def test_another_team_gets_the_404_of_a_missing_model(
        client: TestClient, team_a: dict[str, str], make_token: Callable[[str], str],
        suffix: str) -> None:
    team_b = {"Authorization": f"Bearer {make_token('team-b')}"}
    theirs = client.get(f"/v1/models/ppe/versions/champion{suffix}", headers=team_b)
    missing = client.get(f"/v1/models/nope/versions/champion{suffix}", headers=team_b)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace("ppe", "X") == \
        missing.json()["detail"].replace("nope", "X")


def test_every_file_comes_with_a_signed_link_of_at_most_15_minutes(
        client: TestClient, team_a: dict[str, str], settings: ApiSettings) -> None:
    listing = client.get("/v1/models/ppe/versions/champion/artifacts", headers=team_a).json()
    assert (listing["model"], listing["version"]) == ("ppe", "j1")
    items = {i["name"]: i for i in listing["items"]}
    assert list(items) == ["manifest.json", *FILES]
    for item in items.values():
        query = parse_qs(urlparse(item["url"]).query)
        assert 0 < int(query["expires"][0]) - time.time() <= 900
        body = client.get(item["url"]).content  # no bearer token: the link authorises
        assert (len(body), hashlib.sha256(body).hexdigest()) == (item["size"], item["sha256"])
    manifest = client.get(items["manifest.json"]["url"]).json()
    assert [a["sha256"] for a in manifest["artifacts"]] == \
        [items[f]["sha256"] for f in FILES]

    onnx = items["model.onnx"]["url"]
    # The signature covers team, model, version and file: changing any of them is refused.
    for forged in (onnx.replace("/j1/", "/j2/"), onnx.replace("/team-a/", "/team-b/"),
                   onnx.replace("model.onnx", "best.pt"), onnx[:-4] + "0000"):
        assert client.get(forged).status_code == 403, forged
    stale = onnx.replace(f"expires={parse_qs(urlparse(onnx).query)['expires'][0]}",
                         "expires=1000")
    assert client.get(stale).status_code == 403


def test_links_of_one_answer_are_of_one_version_while_the_alias_moves(
        live_url: str, team_a: dict[str, str], settings: ApiSettings) -> None:
    root = settings.team_models_uri("team-a")
    stop = threading.Event()
    moves = 0

    def mover() -> None:
        nonlocal moves
        while not stop.is_set():
            target = "j2" if moves % 2 == 0 else "j1"
            try:
                aliases.move(root, "ppe", "champion", target, actor="mover", reason="churn")
                moves += 1
            except aliases.AliasConflict:
                pass

    thread = threading.Thread(target=mover, daemon=True)
    thread.start()
    seen = set()
    try:
        with httpx.Client(base_url=live_url, headers=team_a, timeout=30) as http:
            deadline = time.monotonic() + 60
            while len(seen) < 2 or moves < 20:
                assert time.monotonic() < deadline, f"saw {seen} in 60 s, {moves} moves"
                listing = http.get("/v1/models/ppe/versions/champion/artifacts").json()
                version = listing["version"]
                assert {_version_of(i["url"]) for i in listing["items"]} == {version}
                for item in listing["items"][1:]:
                    body = http.get(item["url"]).content
                    assert body.startswith(f"{item['name']} of {version} ".encode())
                    assert hashlib.sha256(body).hexdigest() == item["sha256"]
                seen.add(version)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert seen == {"j1", "j2"}


def test_an_s3_models_store_gives_presigned_links(
        s3_bucket: str, settings: ApiSettings, db: Database, tmp_path: Path,
        make_token: Callable[[str], str]) -> None:
    settings.models_uri = f"s3://{s3_bucket}/models"
    contents = _publish(settings.team_models_uri("team-a"), tmp_path, "j1")
    headers = {"Authorization": f"Bearer {make_token('team-a')}"}
    with TestClient(create_app(settings)) as client:
        listing = client.get("/v1/models/ppe/versions/latest/artifacts", headers=headers)
    assert listing.status_code == 200, listing.text
    items = {i["name"]: i for i in listing.json()["items"]}
    onnx = items["model.onnx"]
    assert onnx["url"].startswith(f"{settings.s3_endpoint_url or 'http'}")
    query = parse_qs(urlparse(onnx["url"]).query)
    assert "/v1/downloads" not in onnx["url"] and ("X-Amz-Signature" in query
                                                   or "Signature" in query)
    assert httpx.get(onnx["url"]).content == contents["model.onnx"]


@pytest.fixture()
def api(live_url: str, team_a: dict[str, str]) -> Iterator[Client]:
    with Client(live_url, token=team_a["Authorization"].split()[1]) as client:
        yield client


def test_pull_checks_writes_atomically_and_resumes(api: Client, tmp_path: Path,
                                                   settings: ApiSettings) -> None:
    dest = tmp_path / "pulled"
    progress: list[tuple[str, int, int]] = []
    first = api.pull_model("ppe", "champion", dest,
                           on_progress=lambda *args: progress.append(args))
    assert first.version == "j1"
    assert sorted(first.fetched) == sorted(["manifest.json", *FILES])
    for file in FILES:
        assert (dest / file).read_bytes() == f"{file} of j1 ".encode() * 200
    assert progress[-1][1] == progress[-1][2] > 0
    assert not list(dest.glob(".*"))  # no temporary file left behind

    # Resumable: what is there with the right sha256 is kept; a damaged file is fetched again.
    (dest / "best.pt").write_bytes(b"half a file")
    again = api.pull_model("ppe", "j1", dest)
    assert again.fetched == ["best.pt"]
    assert (dest / "best.pt").read_bytes() == b"best.pt of j1 " * 200

    only = api.pull_model("ppe", "latest", tmp_path / "onnx", only=["onnx"])
    assert (only.version, sorted(p.name for p in only.paths)) == ("j2",
                                                                  ["manifest.json", "model.onnx"])
    with pytest.raises(Exception, match="no engine file in this version"):
        api.pull_model("ppe", "latest", tmp_path / "engine", only=["engine"])

    # Bytes that differ from the manifest never reach the target.
    stored = Path(urlparse(settings.resolved_models_uri).path) / "team-a/ppe/j2/model.onnx"
    stored.write_bytes(b"replaced after publication")
    with pytest.raises(ApiError) as mismatch:
        api.pull_model("ppe", "j2", tmp_path / "bad")
    assert mismatch.value.code == "checksum_mismatch"
    assert not (tmp_path / "bad" / "model.onnx").exists()
    assert not list((tmp_path / "bad").glob(".*"))
    problems = api.verify_model("ppe", "j2").problems
    assert problems == ["model.onnx: size 26 != manifest 3400",
                        "model.onnx: sha256 differs from the manifest"]
    intact = api.verify_model("ppe", "champion")
    assert (intact.version, intact.problems) == ("j1", [])


def _signed_in(app: FastAPI, token: str) -> TestClient:
    browser = TestClient(app)
    signed_in = browser.post("/ui/login", data={"token": token, "next": "/ui/models"},
                             headers={"Origin": "http://testserver"}, follow_redirects=False)
    assert signed_in.status_code == 303
    return browser


def test_the_dashboard_lists_files_with_links(app: FastAPI, team_a: dict[str, str],
                                              make_token: Callable[[str], str]) -> None:
    with _signed_in(app, team_a["Authorization"].split()[1]) as browser:
        page = browser.get("/ui/models/ppe").text
        link = "/ui/models/ppe/versions/j1/files/model.onnx"
        assert f'href="{link}"' in page
        j1 = page[page.index('id="files-j1"'):]
        j1 = j1[:j1.index("</table>")]
        assert '<span class="badge">champion</span>' in j1
        assert hashlib.sha256(b"model.onnx of j1 " * 200).hexdigest() in j1
        assert "3.3 KiB" in j1  # model.onnx: 3400 bytes
        download = browser.get(link)
        assert download.status_code == 200
        assert download.content == b"model.onnx of j1 " * 200
        assert download.headers["content-disposition"].startswith("attachment")
        assert browser.get("/ui/models/ppe/versions/j1/files/..%2Fj2").status_code == 404
    with _signed_in(app, make_token("team-b")) as other:
        assert other.get(link).status_code == 404
        assert other.get("/ui/models/ppe").status_code == 404
