"""`trainforge schedules …` and the client's schedule methods, against the API over HTTP."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.store import Database
from tests.fixtures.api import SPEC
from tests.fixtures.schedules import Clock, make_dispatcher
from trainforge.cli import app
from trainforge.client import ApiError, Client


@pytest.fixture()
def cli_env(live_url: str, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINFORGE_URL", live_url)
    monkeypatch.setenv("TRAINFORGE_TOKEN", auth["Authorization"].split()[1])


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.mark.usefixtures("cli_env")
def test_create_list_run_runs_pause_resume_delete(tmp_path: Path, db: Database) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: ppe-detector\ndataset: {uri: s3://datasets/ppe/v3/}\n"
                    "model: {base: yolov8n.yaml}\ntrain: {epochs: 3}\n")
    code, out = _cli("schedules", "create", str(spec), "--cron", "0 3 * * *",
                     "--timezone", "Europe/Berlin", "--always", "--name", "nightly")
    assert code == 0, out
    schedule_id = re.search(r"created (s[0-9a-z]+) \(nightly\): 0 3 \* \* \* Europe/Berlin, "
                            r"next \d{4}-\d\d-\d\d \d\d:00 UTC", out).group(1)  # type: ignore[union-attr]

    code, out = _cli("schedules", "list")
    assert code == 0 and schedule_id in out and "nightly" in out and out.rstrip().endswith("no")

    code, out = _cli("schedules", "run", schedule_id)
    assert code == 0 and "due now" in out, out
    dispatcher = make_dispatcher(db, tmp_path, Clock(datetime.now(UTC)))
    try:
        dispatcher.run_once()
    finally:
        dispatcher.close()
    code, out = _cli("schedules", "runs", schedule_id)
    assert code == 0, out
    [line] = out.strip().splitlines()
    job_id = re.search(r" submitted +(j[0-9a-z]+) +submitted job \1: on schedule$", line)
    assert job_id is not None, line

    code, out = _cli("schedules", "show", schedule_id)
    shown = json.loads(out)
    assert shown["last_job_id"] == job_id.group(1)
    assert [r["outcome"] for r in shown["recent_runs"]] == ["submitted"]

    code, out = _cli("schedules", "pause", schedule_id)
    assert code == 0 and out.strip().endswith("paused"), out
    code, out = _cli("schedules", "resume", schedule_id)
    assert code == 0 and "next " in out, out
    code, out = _cli("schedules", "delete", schedule_id)
    assert code == 0 and "deleted" in out
    code, out = _cli("schedules", "show", schedule_id)
    assert code == 1 and "404" in out and "no schedule" in out


@pytest.mark.usefixtures("cli_env")
def test_create_reports_what_to_fix(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: ppe-detector\ndataset: {uri: s3://datasets/ppe/v3/}\n")
    code, out = _cli("schedules", "create", str(spec), "--cron", "0 3 * *")
    assert code == 1 and "cron: a cron expression has 5 fields" in out, out
    code, out = _cli("schedules", "create", str(spec), "--cron", "0 3 * * *",
                     "--timezone", "Moon/Tranquility")
    assert code == 1 and "timezone: unknown time zone 'Moon/Tranquility'" in out, out
    spec.write_text("name: Not_A_Dns_Label\ndataset: {uri: s3://d/}\n")
    code, out = _cli("schedules", "create", str(spec), "--cron", "0 3 * * *")
    assert code == 2 and "name" in out  # refused locally, before any request


def test_client_schedule_methods(live_url: str, auth: dict[str, str]) -> None:
    token = auth["Authorization"].split()[1]
    with Client(live_url, token) as client:
        ids = [client.create_schedule(SPEC, cron=f"{i} 3 * * *", name=f"s-{i}")["id"]
               for i in range(3)]
        assert [s["id"] for s in client.list_schedules(page_size=2)] == list(reversed(ids))
        assert client.pause_schedule(ids[0])["next_fire_at"] is None
        assert client.resume_schedule(ids[0])["next_fire_at"] is not None
        changed = client.update_schedule(ids[0], cron="30 4 * * *", timezone="Asia/Tokyo")
        assert (changed["cron"], changed["timezone"]) == ("30 4 * * *", "Asia/Tokyo")
        assert list(client.schedule_runs(ids[0])) == []
        client.delete_schedule(ids[0])
        with pytest.raises(ApiError) as missing:
            client.get_schedule(ids[0])
        assert (missing.value.status, missing.value.code) == (404, "schedule_not_found")
        with pytest.raises(ApiError) as invalid:
            client.create_schedule(SPEC, cron="*/2 * * * *")
        assert invalid.value.status == 422 and invalid.value.errors[0]["path"] == "cron"
