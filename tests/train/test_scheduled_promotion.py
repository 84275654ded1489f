"""Scheduled retraining with a ``promote:`` section ships only a better model.

A real `trainforge serve` (API, dispatcher, warm local Ray), one schedule whose template trains
a small detector (three shape classes, 96 px, CPU) and promotes with
``min_map50_95_gain: 0.01``, and fresh data dropped at the template's dataset URI before each
run, as a labelling pipeline would:

1. 48 correctly labelled images: the model's first version becomes champion;
2. 48 images whose training labels name the wrong classes: the new version does not beat the
   champion on the new held-out split, and the champion stays;
3. 160 correctly labelled images: the new version wins and becomes champion.

Each run's verdict is on the schedule's run, in the job's events and in the registry.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.embedded import ServeProcess, dev_client, embedded_env
from trainforge import aliases
from trainforge.access import team_models_uri
from trainforge.datasets import synth

pytestmark = pytest.mark.slow

TEMPLATE: dict[str, Any] = {
    "name": "shapes", "model": {"base": "yolov8n.yaml"}, "retries": 0,
    "resources": {"gpus": 0, "cpus": 1},
    "train": {"epochs": 14, "imgsz": 96, "batch": 16, "workers": 0, "warmup_epochs": 0,
              "optimizer": "SGD", "lr0": 0.02, "amp": False, "seed": 0, "plots": False,
              "augment": {"mosaic": 0.0, "close_mosaic": 0}},
    "promote": {"min_map50_95_gain": 0.01},
}


def _drop_data(root: Path, *, train: int, seed: int, wrong_labels: bool = False) -> None:
    """Replace the dataset at ``root`` (the template's URI) with a fresh one."""
    shutil.rmtree(root, ignore_errors=True)
    synth(root, classes=3, train=train, val=8, test=16, imgsz=96, seed=seed)
    if wrong_labels:  # every training box names the next class: a labelling accident
        for label in (root / "train" / "labels").glob("*.txt"):
            lines = [line.split() for line in label.read_text().splitlines() if line.strip()]
            label.write_text("".join(f"{(int(c) + 1) % 3} {' '.join(rest)}\n"
                                     for c, *rest in lines))


def _run(client: httpx.Client, schedule: str, log_path: Path) -> dict[str, Any]:
    """Fire the schedule now; wait for its job to end; return the run (with its verdict)."""
    seen = {r["id"] for r in client.get(f"/v1/schedules/{schedule}/runs").json()["items"]}
    assert client.post(f"/v1/schedules/{schedule}/run").status_code == 202
    deadline = time.monotonic() + 900
    while True:
        runs = [r for r in client.get(f"/v1/schedules/{schedule}/runs").json()["items"]
                if r["id"] not in seen]
        if runs and runs[0]["job_id"]:
            job_id = runs[0]["job_id"]
            state = client.get(f"/v1/jobs/{job_id}").json()["state"]
            if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                assert state == "SUCCEEDED", client.get(f"/v1/jobs/{job_id}/logs").text[-5000:]
                break
        assert not runs or runs[0]["outcome"] == "submitted", runs[0]
        assert time.monotonic() < deadline, log_path.read_text()[-5000:]
        time.sleep(1)
    run = client.get(f"/v1/schedules/{schedule}/runs").json()["items"][0]
    assert run["job_id"] == job_id
    return run


def test_a_schedule_with_promote_ships_only_a_better_model(serve_process: ServeProcess,
                                                           tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = tmp_path / "data" / "shapes"
    log_path = tmp_path / "serve.log"
    with serve_process(embedded_env(home), log_path) as url:
        client = dev_client(url, home)
        _drop_data(data, train=48, seed=1)
        spec = {**TEMPLATE, "dataset": {"uri": f"file://{data}/"}}
        created = client.post("/v1/schedules", json={"cron": "0 3 * * *", "spec": spec})
        assert created.status_code == 201, created.text
        schedule = created.json()["id"]

        first = _run(client, schedule, log_path)
        assert first["promotion"] == (f"promoted {first['job_id']} to champion: the model's "
                                      "first version")

        _drop_data(data, train=48, seed=2, wrong_labels=True)
        second = _run(client, schedule, log_path)
        assert second["promotion"].startswith(f"kept {first['job_id']}: mAP50-95 "), second

        _drop_data(data, train=160, seed=3)
        third = _run(client, schedule, log_path)
        assert third["promotion"].startswith(
            f"promoted {first['job_id']} → {third['job_id']} (+"), third

        events = client.get(f"/v1/jobs/{third['job_id']}/events").json()["items"]
        assert [e["data"]["promotion"] for e in events
                if e["type"] == "message" and (e.get("data") or {}).get("promotion")] == \
            ["promoted"]
        model = client.get("/v1/models/shapes").json()
        assert model["aliases"]["champion"]["version"] == third["job_id"]
        assert [m["version"] for m in model["history"]] == [first["job_id"], third["job_id"]]
        metrics = client.get("/metrics").text
        assert 'trainforge_model_promotions_total{model="shapes",outcome="promoted"} 2.0' in \
            metrics
        assert 'trainforge_model_promotions_total{model="shapes",outcome="kept"} 1.0' in metrics
    root = team_models_uri(f"file://{home}/models", "dev")
    assert aliases.current(root, "shapes", "champion").version == third["job_id"]
