"""``trainforge models … --store URI`` (reading a models store directly) against published
versions (local dir and S3 server); the same commands through the API are
tests/api/test_models_cli_server.py."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainforge.access import EMBEDDED_TEAM, team_models_uri
from trainforge.cli import app
from trainforge.registry import publish, verify
from trainforge.storage import S3Store, open_location, store_for_uri

runner = CliRunner()


@pytest.fixture(params=["local", "s3"])
def models_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        return f"s3://{request.getfixturevalue('s3_bucket')}/models"
    return f"file://{tmp_path}/models"


def _publish(models_uri: str, tmp_path: Path, version: str = "job-1",
             team: str = EMBEDDED_TEAM) -> str:
    """Publish ``ppe@version`` into ``team``'s registry (the CLI reads team dev's by default)."""
    (tmp_path / "best.pt").write_bytes(b"weights" * 1000)
    (tmp_path / "model.onnx").write_bytes(b"onnx" * 1000)
    (tmp_path / "report.json").write_text("{}")
    files = {n: tmp_path / n for n in ("best.pt", "model.onnx", "report.json")}
    return publish(team_models_uri(models_uri, team), "ppe", version, files,
                   {"gates": {"onnx": {"status": "passed"}}}).manifest_uri


def test_verify_list_and_show_an_intact_version(models_uri: str, tmp_path: Path) -> None:
    manifest = _publish(models_uri, tmp_path)
    for ref in (manifest, manifest.removesuffix("manifest.json"), "ppe@job-1",
                "registry://ppe@latest"):
        result = runner.invoke(app, ["models", "verify", ref, "--store", models_uri])
        assert result.exit_code == 0, result.output
        assert "3 artifact(s) match the manifest" in result.output
    listed = runner.invoke(app, ["models", "list", "ppe", "--store", models_uri])
    assert listed.exit_code == 0 and "job-1" in listed.output and "onnx=passed" in listed.output
    shown = runner.invoke(app, ["models", "show", "ppe@job-1", "--store", models_uri])
    assert json.loads(shown.stdout)["version"] == "job-1"
    # It says which store it read (on stderr: stdout stays the command's answer).
    assert f"reading the models store {models_uri}/dev directly" in shown.stderr
    # Another team's registry does not have it (models live under <models>/<team>/).
    other = runner.invoke(app, ["models", "show", "ppe@job-1", "--store", models_uri,
                                "--team", "retail"])
    assert other.exit_code == 1 and "model 'ppe' has no alias or version 'job-1'" in other.output
    other = runner.invoke(app, ["models", "show", f"{models_uri}/retail/ppe/job-1",
                                "--store", models_uri, "--team", "retail"])
    assert other.exit_code == 1 and "/retail/ppe/job-1/" in other.output
    bad = runner.invoke(app, ["models", "list", "ppe", "--store", models_uri,
                              "--team", "../dev"])
    assert bad.exit_code == 1 and "not a team name" in bad.output


def test_verify_exits_1_on_a_changed_or_missing_artifact(models_uri: str,
                                                         tmp_path: Path) -> None:
    manifest = _publish(models_uri, tmp_path)
    store, key = open_location(manifest.replace("manifest.json", "model.onnx"))
    store.put(key, b"not the published model")
    result = runner.invoke(app, ["models", "verify", manifest, "--store", models_uri])
    assert result.exit_code == 1
    assert "FAIL model.onnx: sha256 differs from the manifest" in result.output
    store.delete(key)
    result = runner.invoke(app, ["models", "verify", manifest, "--store", models_uri])
    assert result.exit_code == 1 and "FAIL model.onnx: missing" in result.output


def test_verify_exits_1_when_nothing_is_published(models_uri: str) -> None:
    result = runner.invoke(app, ["models", "verify", "ppe@nope", "--store", models_uri])
    assert result.exit_code == 1 and "has no alias or version 'nope'" in result.output
    result = runner.invoke(app, ["models", "verify", "ppe@j" + "0" * 26, "--store",
                                 models_uri])
    assert result.exit_code == 1 and "no manifest at" in result.output
    result = runner.invoke(app, ["models", "list", "ppe", "--store", models_uri])
    assert result.exit_code == 1 and "no published version" in result.output


def test_s3_keeps_a_full_object_sha256_for_single_part_uploads(s3_bucket: str,
                                                               tmp_path: Path) -> None:
    store = store_for_uri(f"s3://{s3_bucket}")
    assert isinstance(store, S3Store)
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(b"x" * 100_000)
    large.write_bytes(b"y" * (17 * 1024 * 1024))  # above the 16 MiB multipart threshold
    store.upload(small, "small.bin")
    store.upload(large, "large.bin")
    assert store.checksum_sha256("small.bin") == hashlib.sha256(small.read_bytes()).hexdigest()
    # A multipart checksum is a checksum of part checksums, not the file's: not reported.
    assert store.checksum_sha256("large.bin") is None
    assert store.head("large.bin").sha256 == hashlib.sha256(large.read_bytes()).hexdigest()


def test_verify_compares_the_checksums_s3_recorded(s3_bucket: str, tmp_path: Path) -> None:
    manifest = _publish(f"s3://{s3_bucket}/models", tmp_path)
    store, key = open_location(manifest.replace("manifest.json", "best.pt"))
    assert isinstance(store, S3Store)
    body = (tmp_path / "best.pt").read_bytes()
    good = hashlib.sha256(body).hexdigest()
    wrong = hashlib.sha256(b"something else")
    # Same bytes, but the object's recorded checksums disagree with the manifest (real S3
    # refuses such a PUT; the loopback server stores what it is given).
    store._client.put_object(Bucket=s3_bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256",
                             ChecksumSHA256=base64.b64encode(wrong.digest()).decode(),
                             Metadata={"sha256": wrong.hexdigest()})
    assert store.checksum_sha256(key) == wrong.hexdigest() != good
    assert {(p.artifact, p.message) for p in verify(manifest)} == {
        ("best.pt", "sha256 object metadata differs from the manifest"),
        ("best.pt", "S3 ChecksumSHA256 differs from the manifest"),
    }


def test_promote_history_show_and_roll_back(models_uri: str, tmp_path: Path) -> None:
    """``models promote|history|show|list`` and ``@champion`` in every version argument."""
    for version in ("job-1", "job-2"):
        _publish(models_uri, tmp_path, version)
    args = ["--store", models_uri]
    unset = runner.invoke(app, ["models", "show", "ppe@champion", *args])
    assert unset.exit_code == 1 and "no alias or version 'champion'" in unset.output
    moved = runner.invoke(app, ["models", "promote", "ppe@job-2", "--reason", "nightly", *args])
    assert moved.exit_code == 0, moved.output
    assert "ppe@champion: (unset) → job-2 (move 1)" in moved.output
    stale = runner.invoke(app, ["models", "promote", "ppe@job-1", "--expect", "job-9", *args])
    assert stale.exit_code == 1 and "points at job-2, not job-9" in stale.output
    back = runner.invoke(app, ["models", "promote", "ppe@job-1", "--expect", "job-2",
                               "--reason", "job-2 misses vests", *args])
    assert "ppe@champion: job-2 → job-1 (move 2)" in back.output
    history = runner.invoke(app, ["models", "history", "ppe", *args]).stdout.splitlines()
    assert [line.split("\t")[2] for line in history] == ["- → job-2", "job-2 → job-1"]
    assert history[1].endswith("job-2 misses vests")
    shown = runner.invoke(app, ["models", "show", "ppe@champion", *args])
    assert json.loads(shown.stdout)["version"] == "job-1"
    overview = runner.invoke(app, ["models", "show", "ppe", *args]).output
    assert "champion → job-1" in overview
    assert runner.invoke(app, ["models", "verify", "ppe@champion", *args]).exit_code == 0
    listed = runner.invoke(app, ["models", "list", *args]).stdout
    assert listed.split("\t")[0] == "ppe" and "champion=job-1" in listed
    # Another team has no such model, alias or history.
    other = runner.invoke(app, ["models", "history", "ppe", *args, "--team", "retail"])
    assert other.exit_code == 1 and "has no alias moves" in other.output
    refused = runner.invoke(app, ["models", "promote", "ppe@job-1", "--alias", "latest", *args])
    assert refused.exit_code == 1 and "reads as a version" in refused.output


def test_compare_refuses_reports_of_different_datasets(models_uri: str, tmp_path: Path) -> None:
    root = team_models_uri(models_uri, EMBEDDED_TEAM)
    (tmp_path / "best.pt").write_bytes(b"w")
    for version, ap, fingerprint in (("job-1", 0.5, "a" * 64), ("job-2", 0.6, "a" * 64),
                                     ("job-3", 0.7, "b" * 64)):
        evaluation = {"split": "test", "metrics": {"mAP50": ap, "mAP50-95": ap},
                      "per_class": [{"name": "helmet", "images": 4, "AP50": ap,
                                     "AP50-95": ap}]}
        publish(root, "ppe", version, {"best.pt": tmp_path / "best.pt"},
                {"evaluation": evaluation, "dataset": {"fingerprint": fingerprint}})
    out = tmp_path / "comparison.json"
    same = runner.invoke(app, ["models", "compare", "ppe@job-2", "ppe@job-1", "-o", str(out),
                               "--store", models_uri])
    assert same.exit_code == 0, same.output
    assert "verdict (default policy): promoted job-1 → job-2 (+0.100 mAP50-95" in same.output
    assert json.loads(out.read_text())["deltas"]["mAP50-95"] == pytest.approx(0.1)
    other = runner.invoke(app, ["models", "compare", "ppe@job-3", "ppe@job-1",
                                "--store", models_uri])
    assert other.exit_code == 1
    assert "not comparable; re-evaluate both on one dataset" in other.output
