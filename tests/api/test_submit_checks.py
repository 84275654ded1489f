"""Mistakes caught at submit: on the embedded server a submission (or a schedule) whose job
would fail at once on a missing dataset folder, a path to data.yaml, a missing local .pt or a
stock name an offline server cannot fetch is refused, in the job's own words. In production
(not embedded) the server cannot see the job's machine and leaves it to the job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.api import create_app
from services.api.settings import ApiSettings
from services.store import Database
from services.store import jobs as repo
from trainforge.datasets import sync, synth
from trainforge.errors import DatasetNotFound

OFFLINE_STOCK = ("model.base: stock weights 'yolov8n.pt' are not in the weights cache ({cache}) "
                 "and this server is offline (YOLO_OFFLINE=1), so they cannot be downloaded: use "
                 "yolov8n.yaml to train from scratch, a local .pt (model.base: "
                 "/abs/path/yolov8n.pt, embedded server), or put the weights in "
                 "{cache}/yolov8n.pt (TRAINFORGE_WEIGHTS_CACHE)")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth(tmp_path_factory.mktemp("data") / "shapes", classes=1, train=2, val=1, test=0,
                 imgsz=32)


def _spec(dataset: str, base: str = "yolov8n.yaml") -> dict[str, object]:
    return {"name": "shapes", "dataset": {"uri": dataset}, "model": {"base": base}}


def _jobs(db: Database) -> int:
    with db.transaction() as session:
        return len(repo.list_jobs(session, "vision", limit=100)[0])


def test_the_job_would_find_them_so_they_are_accepted(
    client: TestClient, auth: dict[str, str], shapes: Path, settings: ApiSettings
) -> None:
    for spec in (_spec(f"file://{shapes}/"), _spec(str(shapes)),
                 _spec("s3://datasets/elsewhere/")):
        response = client.post("/v1/jobs", json={"spec": spec}, headers=auth)
        assert response.status_code == 201, response.text
    cached = settings.home / "weights" / "yolov8n.pt"  # the operator put it in the cache
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    response = client.post("/v1/jobs", json={"spec": _spec(str(shapes), "yolov8n.pt")},
                           headers=auth)
    assert response.status_code == 201, response.text


def test_each_mistake_is_refused_in_the_jobs_words(
    client: TestClient, auth: dict[str, str], db: Database, shapes: Path, tmp_path: Path,
    settings: ApiSettings,
) -> None:
    (tmp_path / "empty").mkdir()
    cache = settings.home / "weights"
    cases = [
        (_spec(f"file://{tmp_path}/nope/"), 422, "dataset_not_found",
         f"dataset.uri: {tmp_path}/nope does not exist: pass the dataset root (the folder "
         "with data.yaml)"),
        (_spec(f"{shapes}/data.yaml"), 422, "dataset_not_found",
         f"dataset.uri: {shapes}/data.yaml is a file: pass the folder, not data.yaml "
         f"(file://{shapes}/)"),
        (_spec(f"file://{tmp_path}/empty/"), 422, "dataset_invalid",
         f"dataset.uri: file://{tmp_path}/empty/: no data.yaml at the dataset root"),
        (_spec(str(shapes), f"{tmp_path}/best.pt"), 422, "weights_unavailable",
         f"cannot fetch base weights {tmp_path}/best.pt: no file at {tmp_path}/best.pt"),
        (_spec(str(shapes), "yolov8n.pt"), 422, "weights_unavailable",
         OFFLINE_STOCK.format(cache=cache)),
    ]
    for spec, status, code, detail in cases:
        response = client.post("/v1/jobs", json={"spec": spec}, headers=auth)
        assert response.status_code == status, response.text
        problem = response.json()
        assert problem["code"] == code and problem["detail"].startswith(detail), problem
        schedule = client.post("/v1/schedules", headers=auth,
                               json={"cron": "0 3 * * *", "spec": spec})
        assert schedule.status_code == status and schedule.json()["detail"] == \
            problem["detail"], schedule.text
    assert _jobs(db) == 0


def test_the_job_opens_a_dataset_through_the_same_door(shapes: Path, tmp_path: Path) -> None:
    # What the job's dataset-sync step says (jobs/core/dataset_step.py) for the same mistake.
    with pytest.raises(DatasetNotFound, match=f"^{shapes}/data.yaml is a file: pass the folder, "
                                              "not data.yaml"):
        sync(f"file://{shapes}/data.yaml", tmp_path / "cache")


def test_the_default_base_is_refused_with_what_to_do(
    client: TestClient, auth: dict[str, str], shapes: Path
) -> None:
    response = client.post("/v1/jobs", headers=auth,
                           json={"spec": {"name": "shapes", "dataset": {"uri": str(shapes)}}})
    assert response.status_code == 422
    assert "use yolov8n.yaml to train from scratch" in response.json()["detail"]


@pytest.fixture()
def production(settings: ApiSettings, db: Database) -> Iterator[TestClient]:
    """The API outside embedded mode (no view of the jobs' machine)."""
    with TestClient(create_app(settings.model_copy(update={"embedded": False}))) as client:
        yield client


def test_production_leaves_stock_weights_to_the_cluster(
    production: TestClient, auth: dict[str, str]
) -> None:
    response = production.post("/v1/jobs", headers=auth,
                               json={"spec": _spec("s3://datasets/ppe/", "yolov8n.pt")})
    assert response.status_code == 201, response.text
