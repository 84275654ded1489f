"""``python -m jobs.export --spec URI`` as the dispatcher runs it: exit status, events, log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.checkpoints import Trained
from tests.fixtures.export import EventSink, sample, scrape
from trainforge.access import AccessRules, TeamAccess
from trainforge.aliases import resolve_version
from trainforge.registry import ModelNotFound, is_export, read_manifest, verify

REPO = Path(__file__).resolve().parents[2]


#: The job's team and rules, as the dispatcher hands them over: local paths may be read.
TEAM = "vision"
LOCAL_ACCESS = AccessRules.build(TEAM, TeamAccess(datasets=("file:///",), weights=("file:///",)),
                                 local_paths=True, reserved={}).to_env()


def _command(spec: dict[str, Any], tmp_path: Path, sink: EventSink, pushgateway: str,
             job_id: str) -> tuple[list[str], dict[str, str]]:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRAINFORGE_")},
        "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1",
        "TRAINFORGE_HOME": str(tmp_path / "home"),
        "TRAINFORGE_MODELS_URI": f"file://{tmp_path}/models",
        "TRAINFORGE_ARTIFACTS_URI": f"file://{tmp_path}/artifacts",
        "TRAINFORGE_JOB_ID": job_id, "TRAINFORGE_ATTEMPT": "1",
        "TRAINFORGE_JOB_TEAM": TEAM, "TRAINFORGE_JOB_ACCESS": LOCAL_ACCESS,
        "TRAINFORGE_API_URL": f"http://127.0.0.1:{sink.server_address[1]}",
        "TRAINFORGE_JOB_TOKEN": "job-token", "TRAINFORGE_PUSHGATEWAY_URL": pushgateway,
    }
    return [sys.executable, "-m", "jobs.export", "--spec", f"file://{spec_file}"], env


def _run(spec: dict[str, Any], tmp_path: Path, sink: EventSink, pushgateway: str,
         job_id: str) -> subprocess.CompletedProcess[str]:
    command, env = _command(spec, tmp_path, sink, pushgateway, job_id)
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)


def _states(sink: EventSink) -> list[tuple[str, str | None]]:
    return [(e["state"], e.get("error_code")) for e in sink.events if e["type"] == "state"]


@pytest.mark.slow
def test_an_export_job_publishes_reports_and_ships_its_log(
    trained: Trained, tmp_path: Path, event_sink: EventSink, pushgateway: str
) -> None:
    spec = {"kind": "export", "name": "shapes", "dataset": {"uri": f"file://{trained.dataset}"},
            "model": {"base": f"file://{trained.weights}"},
            "export": {"formats": ["onnx", "engine"], "int8": True}}
    done = _run(spec, tmp_path, event_sink, pushgateway, "job-e2e")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    manifest_uri = f"file://{tmp_path}/models/{TEAM}/shapes/job-e2e/manifest.json"
    assert verify(manifest_uri) == []
    manifest = read_manifest(manifest_uri)
    assert "model.onnx" in {a["name"] for a in manifest["artifacts"]}
    assert _states(event_sink) == [("RUNNING", None), ("SUCCEEDED", None)]
    assert set(event_sink.headers_seen) == {"Bearer job-token"}
    assert all(e["path"] == "/internal/v1/jobs/job-e2e/events" for e in event_sink.events)
    messages = [e["message"] for e in event_sink.events if e["type"] == "message"]
    assert "onnx passed" in messages and "published shapes@job-e2e" in messages
    log = (tmp_path / "artifacts" / "jobs" / "job-e2e" / "attempts" / "1" / "log.txt").read_text()
    # ship_log tees the job's stdout and stderr into the shipped log and onto the console.
    assert "published" in log
    if manifest["gates"]["engine-fp16"]["status"] == "skipped":
        # Without a GPU the reason is printed, and recorded; the engines are not published.
        assert "engine-fp16 skipped: TensorRT engine not built:" in done.stdout + done.stderr
        assert "engine-fp16 skipped: TensorRT engine not built:" in log
        assert not any(a["name"].endswith(".engine") for a in manifest["artifacts"])
    got = scrape(pushgateway)
    assert sample(got, "trainforge_export_gate_passed", format="onnx", model="shapes") == 1
    assert sample(got, "trainforge_export_duration_seconds", model="shapes") is not None
    # The export's version has no held-out scores of its own: it never becomes @latest.
    models_uri = f"file://{tmp_path}/models/{TEAM}"
    assert is_export(manifest)
    with pytest.raises(ModelNotFound, match="only export versions"):
        resolve_version(models_uri, "shapes", "latest")


def test_missing_weights_fail_the_job_with_a_code_and_still_push_metrics(
    shapes_dataset: Path, tmp_path: Path, event_sink: EventSink, pushgateway: str
) -> None:
    spec = {"kind": "export", "name": "shapes", "dataset": {"uri": str(shapes_dataset)},
            "model": {"base": f"file://{tmp_path}/nowhere/best.pt"},
            "export": {"formats": ["onnx"]}}
    done = _run(spec, tmp_path, event_sink, pushgateway, "job-missing")
    assert done.returncode == 1
    assert _states(event_sink) == [("RUNNING", None), ("FAILED", "weights_unavailable")]
    failed = [e for e in event_sink.events if e.get("state") == "FAILED"][0]
    assert "nowhere/best.pt" in failed["reason"]
    got = scrape(pushgateway)
    assert sample(got, "trainforge_export_duration_seconds", model="shapes") is not None
    assert sample(got, "trainforge_export_last_success_timestamp_seconds") is None
    assert not (tmp_path / "models" / TEAM / "shapes").exists()


def test_a_spec_of_another_kind_is_refused(shapes_dataset: Path, tmp_path: Path,
                                           event_sink: EventSink, pushgateway: str) -> None:
    spec = {"kind": "train", "name": "shapes", "dataset": {"uri": str(shapes_dataset)},
            "export": {"formats": ["onnx"]}}
    done = _run(spec, tmp_path, event_sink, pushgateway, "job-kind")
    assert done.returncode == 1
    assert _states(event_sink) == [("FAILED", "spec_invalid")]
    assert "kind is 'train'; run it with python -m jobs.train" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_cancelled_export_exits_143_with_its_log_shipped(
    trained: Trained, tmp_path: Path, event_sink: EventSink, pushgateway: str
) -> None:
    """SIGTERM, as the dispatcher cancels, ends the export like any job: no FAILED claim."""
    spec = {"kind": "export", "name": "shapes", "dataset": {"uri": f"file://{trained.dataset}"},
            "model": {"base": f"file://{trained.weights}"}, "export": {"formats": ["onnx"]}}
    command, env = _command(spec, tmp_path, event_sink, pushgateway, "job-cancel")
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while ("RUNNING", None) not in _states(event_sink):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output[-3000:]
    assert _states(event_sink) == [("RUNNING", None)]
    log = (tmp_path / "artifacts" / "jobs" / "job-cancel" / "attempts" / "1" / "log.txt")
    assert "cancelled (SIGTERM)" in log.read_text()
    assert not (tmp_path / "models" / TEAM / "shapes" / "job-cancel").exists()
