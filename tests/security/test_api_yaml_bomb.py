"""A YAML bomb sent to POST /v1/datasets/validate is refused, in bounded time and memory.

A ~1 KB data.yaml with nested aliases ("billion laughs") drove the API past 5.5 GB. Here the
API runs as it does in production, ``python -m services.api`` in its own process (settings from
TRAINFORGE_* variables), so that the peak resident memory of the process serving the request
(VmHWM in /proc/<pid>/status) can be read before and after the bomb. The dataset is local
(embedded mode) or on the loopback S3 server; both reach data.yaml through parse_config.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.store import Database
from tests.security.support import api_env, billion_laughs, serve_api

REPO = Path(__file__).resolve().parents[2]


def dataset_files(data_yaml: str) -> dict[str, bytes]:
    """A tiny YOLO dataset (one image and label per split) with the given data.yaml."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 30, 200)).save(buffer, format="JPEG")
    files = {"data.yaml": data_yaml.encode()}
    for split in ("train", "val"):
        files[f"images/{split}/a.jpg"] = buffer.getvalue()
        files[f"labels/{split}/a.txt"] = b"0 0.5 0.5 0.25 0.25\n"
    return files


GOOD_YAML = "path: .\ntrain: images/train\nval: images/val\nnames: {0: helmet}\n"
BOMB_YAML = "train: images/train\nval: images/val\n" + billion_laughs()


def _local(root: Path) -> Callable[[str, dict[str, bytes]], str]:
    def put(name: str, files: dict[str, bytes]) -> str:
        for rel, data in files.items():
            path = root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return f"file://{root / name}/"

    return put


def _s3(bucket: str, endpoint: str) -> Callable[[str, dict[str, bytes]], str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint)

    def put(name: str, files: dict[str, bytes]) -> str:
        for rel, data in files.items():
            client.put_object(Bucket=bucket, Key=f"{name}/{rel}", Body=data)
        return f"s3://{bucket}/{name}/"

    return put


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_yaml_bomb_is_refused_in_bounded_time_and_memory(
    where: str, request: pytest.FixtureRequest, tmp_path: Path, database_url: str,
    artifacts_dir: Path, db: Database, make_token: Callable[[str], str],
) -> None:
    assert len(BOMB_YAML) < 1100  # about 1 KB on the wire
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        put = _s3(bucket, os.environ["TRAINFORGE_S3_ENDPOINT_URL"])
        readable: tuple[str, ...] = (f"s3://{bucket}/",)
    else:
        put = _local(tmp_path / "datasets")
        readable = ("file:///",)
    good, bomb = put("good", dataset_files(GOOD_YAML)), put("bomb", dataset_files(BOMB_YAML))
    headers = {"Authorization": f"Bearer {make_token('vision')}"}
    env = api_env(tmp_path, database_url, artifacts_dir, readable)
    with serve_api(env, tmp_path / "api.log") as api, httpx.Client(
        base_url=api.url, headers=headers, timeout=120
    ) as client:
        # Warm up: the first validation imports the dataset toolkit (Pillow, …).
        warm = client.post("/v1/datasets/validate", json={"uri": good})
        assert warm.status_code == 200 and warm.json()["ok"] is True, warm.text
        before = api.peak_rss_mb()
        started = time.perf_counter()
        response = client.post("/v1/datasets/validate", json={"uri": bomb})
        elapsed = time.perf_counter() - started
        grown = api.peak_rss_mb() - before
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["ok"] is False
        problems = [p for p in body["report"]["problems"] if p["code"] == "data_yaml_invalid"]
        assert len(problems) == 1, body["report"]["problems"]
        assert problems[0]["file"] == "data.yaml"
        assert problems[0]["message"] == (
            "data.yaml expands to more than 100000 nodes through aliases (&anchor/*alias); "
            "write the values out"
        )
        assert client.get("/healthz").status_code == 200  # still serving
    print(f"{where}: bomb refused in {elapsed:.2f} s, server peak RSS grew {grown:.1f} MB")
    assert elapsed < 5, f"the bomb took {elapsed:.1f} s to refuse"
    assert grown < 200, f"the server's peak RSS grew {grown:.0f} MB serving the bomb"
