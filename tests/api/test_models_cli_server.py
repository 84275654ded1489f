"""``trainforge models …`` against a real ``trainforge serve``: the real command in a
subprocess, whose own home is empty, so everything it prints came through the API. One server
for the module, with versions published into its registry as a job publishes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnxruntime
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.fixtures.embedded import ServeProcess, embedded_env
from tests.fixtures.network import free_port
from trainforge import aliases, lifecycle
from trainforge.access import team_models_uri
from trainforge.registry import publish

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Served:
    url: str
    home: Path
    #: The environment of a CLI on another machine: an empty home, the server's URL and token.
    env: dict[str, str]

    @property
    def models_uri(self) -> str:
        return f"file://{self.home}/models"


def _evaluation(ap: float) -> dict[str, object]:
    return {"split": "test", "note": "held-out test split",
            "metrics": {"mAP50": ap + 0.1, "mAP50-95": ap, "precision": 0.9, "recall": 0.8},
            "per_class": [{"name": "helmet", "images": 8, "AP50": ap + 0.1, "AP50-95": ap}]}


def _publish_versions(models_uri: str, work: Path, onnx: Path) -> None:
    """Team dev's ppe@j1 (champion) and ppe@j2 (kept), and bikes@b1, bikes@b2."""
    root = team_models_uri(models_uri, "dev")
    (work / "best.pt").write_bytes(b"weights " * 512)
    (work / "report.json").write_text("{}")
    for name, version, ap in (("ppe", "j1", 0.5), ("ppe", "j2", 0.45), ("bikes", "b1", 0.3),
                              ("bikes", "b2", 0.4)):
        files = {"best.pt": work / "best.pt", "report.json": work / "report.json",
                 "model.onnx": onnx}
        publish(root, name, version, files, {
            "source_job_id": version, "evaluation": _evaluation(ap),
            "metrics": _evaluation(ap)["metrics"], "base": "yolov8n.yaml",
            "dataset": {"uri": "s3://datasets/ppe/", "fingerprint": "d" * 64},
            "input_shape": [1, 3, 64, 64], "dynamic": False,
            "gates": {"onnx": {"status": "passed", "map_delta": 0.001}}})
    for name, version in (("ppe", "j1"), ("bikes", "b1")):
        aliases.move(root, name, "champion", version, actor="job", reason="first version")
    lifecycle.keep_decision(root, {
        "model": "ppe", "version": "j2", "alias": "champion", "champion": "j1",
        "outcome": "kept", "summary": "kept j1: mAP50-95 -0.050",
        "decided_at": "2026-01-01T03:00:00+00:00"})


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.onnx of an untrained yolov8n at 64 px, batch 1 (seconds to export)."""
    from ultralytics.models.yolo.model import YOLO

    from jobs.export.convert import export_onnx

    work = tmp_path_factory.mktemp("export")
    YOLO("yolov8n.yaml").save(str(work / "best.pt"))
    return export_onnx(work / "best.pt", work / "model.onnx", imgsz=64, batch=1, dynamic=False,
                       simplify=True, opset=None)


@pytest.fixture(scope="module")
def served(serve_process: ServeProcess, tmp_path_factory: pytest.TempPathFactory,
           onnx_model: Path) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("models-cli")
    home = base / "server-home"
    env = {**embedded_env(home), "TRAINFORGE_DISPATCHER_WARM_RAY": "false"}
    _publish_versions(f"file://{home}/models", base, onnx_model)
    with serve_process(env, base / "serve.log") as url:
        token = (home / "dev-token").read_text().strip()
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINFORGE_")}
        client_env.update({"PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1",
                           "TRAINFORGE_HOME": str(base / "client-home"),
                           "TRAINFORGE_URL": url, "TRAINFORGE_TOKEN": token})
        yield Served(url, home, client_env)


def _cli(env: dict[str, str], *args: str, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainforge", "models", *args], env=env,
                          cwd=cwd, text=True, capture_output=True, timeout=120)


def _ok(env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    done = _cli(env, *args, cwd=cwd)
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    assert "reading the models store" not in done.stderr  # the API, not a store
    return done.stdout


def test_list_show_report_and_verify_come_from_the_server(served: Served) -> None:
    env = served.env
    assert _ok(env, "list").splitlines() == [
        "bikes\t2 version(s)\tlatest b2\tchampion=b1",
        "ppe\t2 version(s)\tlatest j2\tchampion=j1"]
    versions = _ok(env, "list", "ppe").splitlines()
    assert [line.split("\t")[0] for line in versions] == ["j1", "j2"]
    assert versions[0].endswith("best.pt,model.onnx,report.json\tonnx=passed")
    overview = _ok(env, "show", "ppe")
    assert "champion → j1" in overview and "kept j1: mAP50-95 -0.050" in overview
    champion = json.loads(_ok(env, "show", "ppe@champion"))
    assert (champion["version"], champion["base"]) == ("j1", "yolov8n.yaml")
    kept = json.loads(_ok(env, "show", "ppe@j2"))
    assert kept["promotion"]["outcome"] == "kept"
    report = _ok(env, "report", "ppe@champion")
    assert report.startswith("model ppe@j1  (test split)")
    assert "  mAP50-95   0.5000" in report and "files of ppe@j1:" in report
    verified = _ok(env, "verify", "ppe@latest")
    assert verified.strip() == f"OK ppe@j2 (through {served.url}): 3 artifact(s) match the " \
                               "manifest"


def test_promote_history_and_compare_go_through_the_api(served: Served) -> None:
    env = served.env
    moved = _ok(env, "promote", "bikes@b2", "--reason", "nightly", "--expect", "b1")
    assert moved.strip() == "bikes@champion: b1 → b2 (move 2)"
    stale = _cli(env, "promote", "bikes@b1", "--expect", "b1")
    assert stale.returncode == 1 and "409" in stale.stderr and "points at b2" in stale.stderr
    history = _ok(env, "history", "bikes").splitlines()
    assert [line.split("\t")[2] for line in history] == ["- → b1", "b1 → b2"]
    assert history[1].endswith("team dev (API)\tnightly")
    compared = _ok(env, "compare", "bikes@b2", "bikes@b1")
    assert "verdict (default policy): promoted b1 → b2 (+0.100 mAP50-95" in compared
    local = _cli(env, "compare", "bikes@b2", "bikes@b1", "--dataset", "/nowhere")
    assert local.returncode == 1 and "add --store URI" in local.stderr


def test_pull_files_and_a_triton_repository(served: Served, tmp_path: Path,
                                            onnx_model: Path) -> None:
    env = served.env
    first = _ok(env, "pull", "ppe@champion", cwd=tmp_path)
    assert "pulled ppe@j1 into ppe-j1: 4 file(s) fetched, 0 already there" in first
    assert (tmp_path / "ppe-j1" / "model.onnx").read_bytes() == onnx_model.read_bytes()
    again = _ok(env, "pull", "ppe@j1", "-o", "ppe-j1", cwd=tmp_path)
    assert "0 file(s) fetched, 4 already there" in again
    only = _ok(env, "pull", "ppe@latest", "--only", "onnx", "-o", "onnx", cwd=tmp_path)
    assert "pulled ppe@j2 into onnx: 2 file(s) fetched" in only
    assert sorted(p.name for p in (tmp_path / "onnx").iterdir()) == ["manifest.json",
                                                                      "model.onnx"]

    _ok(env, "pull", "ppe@champion", "--layout", "triton", "-o", "repo", cwd=tmp_path)
    config = text_format.Parse((tmp_path / "repo/ppe/config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert (config.name, config.platform, config.max_batch_size) == ("ppe", "onnxruntime_onnx",
                                                                     0)
    session = onnxruntime.InferenceSession(str(tmp_path / "repo/ppe/1/model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert [(t.name, list(t.dims), t.data_type) for t in config.input] == \
        [(t.name, t.shape, model_config_pb2.TYPE_FP32) for t in session.get_inputs()]
    assert [(t.name, list(t.dims)) for t in config.output] == \
        [(t.name, t.shape) for t in session.get_outputs()]
    missing = _cli(env, "pull", "ppe@champion", "--only", "engine", "-o", "x", cwd=tmp_path)
    assert missing.returncode == 1 and "no engine file in this version" in missing.stderr


def test_reading_a_store_is_explicit_and_says_which(served: Served, tmp_path: Path) -> None:
    env = served.env
    direct = _cli(env, "list", "--store", served.models_uri)
    assert direct.returncode == 0 and direct.stdout.startswith("bikes\t")
    assert f"reading the models store {served.models_uri}/dev directly" in direct.stderr
    manifest = f"{served.models_uri}/dev/ppe/j1/manifest.json"
    verified = _cli(env, "verify", manifest, "--store", served.models_uri)
    assert verified.returncode == 0 and f"OK {manifest}: 3 artifact(s)" in verified.stdout
    for args, says in ((("verify", manifest), "read it with --store URI"),
                       (("list", "--team", "dev"), "--team goes with --store")):
        refused = _cli(env, *args)
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
    nobody = {**env, "TRAINFORGE_URL": f"http://127.0.0.1:{free_port()}"}
    unreachable = _cli(nobody, "list")
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr and "--store URI" in unreachable.stderr


def test_another_teams_token_sees_none_of_it(served: Served) -> None:
    created = subprocess.run(
        [sys.executable, "-m", "trainforge", "tokens", "create", "--team", "retail"],
        env={**served.env, "TRAINFORGE_HOME": str(served.home)}, text=True,
        capture_output=True, timeout=120)
    assert created.returncode == 0, created.stderr
    retail = {**served.env, "TRAINFORGE_TOKEN": created.stdout.split()[-1]}
    assert _ok(retail, "list") == ""
    hidden = _cli(retail, "show", "ppe@champion")
    assert hidden.returncode == 1
    assert "404 model 'ppe' has no alias or version 'champion'" in hidden.stderr
    pulled = _cli(retail, "pull", "ppe@j1")
    assert pulled.returncode == 1 and "404" in pulled.stderr
