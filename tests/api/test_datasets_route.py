"""POST /v1/datasets/validate: reports on a dataset by URI (trainforge.datasets does the work)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from services.api.settings import ApiSettings


def _tiny_dataset(root: Path) -> Path:
    """A valid YOLO dataset: data.yaml, two splits, one image and one label each."""
    from PIL import Image

    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (64, 64), (120, 30, 200)).save(root / "images" / split / "a.jpg")
        (root / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames: {0: helmet}\n"
    )
    return root


def test_validate_reports_on_a_dataset(
    client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    good = _tiny_dataset(tmp_path / "good")
    response = client.post("/v1/datasets/validate", json={"uri": f"file://{good}/"},
                           headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    (good / "data.yaml").write_text("train: images/train\n")  # no names, no val
    response = client.post("/v1/datasets/validate", json={"uri": f"file://{good}/"},
                           headers=auth)
    assert response.status_code == 200 and response.json()["ok"] is False
    codes = {p["code"] for p in response.json()["report"]["problems"]}
    assert codes, response.json()


def test_a_missing_dataset_is_422_with_the_reason(
    client: TestClient, auth: dict[str, str], tmp_path: Path
) -> None:
    response = client.post("/v1/datasets/validate",
                           json={"uri": f"file://{tmp_path / 'nothing-here'}/"}, headers=auth)
    assert response.status_code == 422 and response.json()["code"].startswith("dataset")


def test_outside_embedded_mode_only_s3_uris_are_accepted(
    client: TestClient, auth: dict[str, str], settings: ApiSettings
) -> None:
    settings.embedded = False
    response = client.post("/v1/datasets/validate", json={"uri": "file:///etc/"}, headers=auth)
    assert response.status_code == 403 and "s3://" in response.json()["detail"]


def test_validate_needs_a_token(client: TestClient) -> None:
    assert client.post("/v1/datasets/validate", json={"uri": "s3://b/p/"}).status_code == 401
