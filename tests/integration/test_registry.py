"""Publishing a model version: manifest last, never overwritten, verifiable, resolvable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainforge.registry import ModelNotFound, publish, read_manifest, resolve, verify
from trainforge.storage import open_location


@pytest.fixture(params=["s3", "local"])
def models_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/models"
    return f"file://{tmp_path}/models"


def _files(tmp_path: Path, payload: bytes) -> dict[str, Path]:
    (tmp_path / "best.pt").write_bytes(payload)
    (tmp_path / "report.json").write_text('{"map50": 0.7}')
    return {"best.pt": tmp_path / "best.pt", "report.json": tmp_path / "report.json"}


def test_publish_then_verify_and_resolve(models_uri: str, tmp_path: Path) -> None:
    result = publish(models_uri, "ppe", "job1", _files(tmp_path, b"weights-1"),
                     {"metrics": {"map50": 0.7}})
    assert result.created
    manifest = read_manifest(result.manifest_uri)
    assert {a["name"] for a in manifest["artifacts"]} == {"best.pt", "report.json"}
    assert verify(result.manifest_uri) == []
    assert resolve("registry://ppe@job1", models_uri).endswith("ppe/job1/best.pt")
    assert resolve("registry://ppe@latest", models_uri).endswith("ppe/job1/best.pt")
    with pytest.raises(ModelNotFound):
        resolve("registry://ppe@nope", models_uri)


def test_latest_is_the_newest_trained_version_never_an_exports(
    models_uri: str, tmp_path: Path
) -> None:
    from trainforge.lifecycle import models

    files = _files(tmp_path, b"weights")
    export = {"source": {"job_id": "job3", "kind": "export", "base": "registry://ppe@job1"}}
    publish(models_uri, "ppe", "job3", files, export)
    with pytest.raises(ModelNotFound, match="only export versions .*newest trained version"):
        resolve("registry://ppe@latest", models_uri)
    publish(models_uri, "ppe", "job1", files, {"evaluation": {"split": "test"}})
    publish(models_uri, "ppe", "job4", files, {**export, "source": {"kind": "export"}})
    assert resolve("registry://ppe@latest", models_uri).endswith("ppe/job1/best.pt")
    assert resolve("registry://ppe@job4", models_uri).endswith("ppe/job4/best.pt")
    assert models(models_uri) == [{"name": "ppe", "versions": 3, "latest": "job1",
                                   "aliases": {}}]


def test_republishing_a_version_changes_nothing(models_uri: str, tmp_path: Path) -> None:
    first = publish(models_uri, "ppe", "job1", _files(tmp_path, b"weights-1"), {})
    again = publish(models_uri, "ppe", "job1", _files(tmp_path, b"weights-2"), {})
    assert not again.created and again.manifest == first.manifest
    store, key = open_location(first.manifest_uri.replace("manifest.json", "best.pt"))
    assert store.get(key) == b"weights-1"
    assert verify(first.manifest_uri) == []


def test_verify_reports_a_tampered_artifact(models_uri: str, tmp_path: Path) -> None:
    result = publish(models_uri, "ppe", "job2", _files(tmp_path, b"weights"), {})
    store, key = open_location(result.manifest_uri.replace("manifest.json", "best.pt"))
    store.put(key, b"tampered")
    problems = verify(result.manifest_uri)
    assert {p.artifact for p in problems} == {"best.pt"}
    messages = {p.message for p in problems}
    assert {"size 8 != manifest 7", "sha256 differs from the manifest"} <= messages
    if models_uri.startswith("s3://"):  # the object's recorded checksums disagree too
        assert {"sha256 object metadata differs from the manifest",
                "S3 ChecksumSHA256 differs from the manifest"} <= messages
    assert json.loads(store.get(key.replace("best.pt", "manifest.json")))["version"] == "job2"
