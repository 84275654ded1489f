"""The CLI and `trainforge serve`: the embedded default end to end, in real processes."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from services.store.migrate import alembic_config
from tests.fixtures.embedded import ServeProcess

ROOT = Path(__file__).resolve().parents[2]


def _env(home: Path, **extra: str) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINFORGE_")}
    return {**env, "PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT), "YOLO_OFFLINE": "1",
            "TRAINFORGE_HOME": str(home), **extra}


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainforge", *args], env=env, text=True,
                          capture_output=True, timeout=timeout)


@pytest.fixture()
def served(serve_process: ServeProcess, tmp_path: Path
           ) -> Iterator[tuple[str, dict[str, str]]]:
    """`trainforge serve` on a free port, running jobs with tests.standin."""
    home = tmp_path / "home"
    env = _env(home, TRAINFORGE_DISPATCHER_LOCAL_MODULE="tests.standin",
               TRAINFORGE_DISPATCHER_POLL_INTERVAL_S="0.2",
               TRAINFORGE_DISPATCHER_RETRY_DELAY_S="0",
               # The embedded team reads local paths by default; the specs here name S3.
               TRAINFORGE_STORAGE_POLICY='{"teams": {"dev": {"datasets": ["s3://datasets/"]}}}')
    log_path = tmp_path / "serve.log"
    with serve_process(env, log_path, timeout_s=60) as url:
        yield url, {**env, "TRAINFORGE_URL": url}
    assert f"trainforge serving on {url}" in log_path.read_text()


def test_serve_submit_wait_list_logs_artifacts(
    served: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = served
    token_file = Path(env["TRAINFORGE_HOME"]) / "dev-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    spec = tmp_path / "spec.yaml"
    # yolov8n.yaml: this offline server (YOLO_OFFLINE=1) refuses the default yolov8n.pt.
    spec.write_text("name: ppe-detector\ndataset: {uri: s3://datasets/ppe/v3/}\n"
                    "model: {base: yolov8n.yaml}\ntrain: {epochs: 3}\n")
    done = _cli(env, "jobs", "submit", str(spec), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch 3/3" in done.stdout and "SUCCEEDED" in done.stdout
    job_id = re.search(r"submitted (j[0-9a-z]+)", done.stdout).group(1)  # type: ignore[union-attr]
    listed = _cli(env, "jobs", "list")
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    logs = _cli(env, "jobs", "logs", job_id)
    assert "epoch 3/3 done" in logs.stdout
    events = _cli(env, "jobs", "events", job_id)
    assert "RUNNING -> SUCCEEDED" in events.stdout
    download = tmp_path / "download"
    fetched = _cli(env, "jobs", "artifacts", job_id, "--download", str(download))
    assert fetched.returncode == 0 and (download / "train" / "best.pt").exists()

    spec.write_text("name: fail-fast\ndataset: {uri: s3://datasets/ppe/v3/}\n"
                    "model: {base: yolov8n.yaml}\nretries: 0\n")
    failed = _cli(env, "jobs", "submit", str(spec), "--wait")
    assert failed.returncode != 0 and "standin_failure" in failed.stdout

    spec.write_text("name: Not_A_Dns_Label\ndataset: {uri: s3://d/}\n")
    invalid = _cli(env, "jobs", "submit", str(spec))
    assert invalid.returncode == 2 and "name" in invalid.stdout


def test_tokens_create_and_revoke(tmp_path: Path) -> None:
    env = _env(tmp_path)
    created = _cli(env, "tokens", "create", "--team", "vision")
    assert created.returncode == 0, created.stderr
    token = created.stdout.split()[-1]
    assert token.startswith("tf_")
    listed = _cli(env, "tokens", "list")
    assert "vision" in listed.stdout and token not in listed.stdout
    assert _cli(env, "tokens", "revoke", token).returncode == 0
    assert "revoked" in _cli(env, "tokens", "list").stdout
    bad = _cli(env, "tokens", "create", "--team", "Not A Team")
    assert bad.returncode == 2 and "DNS label" in bad.stdout
    upgraded = _cli(env, "db", "upgrade")
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert upgraded.returncode == 0 and f"revision {head}" in upgraded.stdout


def test_tokens_never_migrates_a_configured_database(tmp_path: Path) -> None:
    """Only ``db upgrade`` (and ``serve``) migrate: ``tokens`` on a database that is behind
    stops and names the command that upgrades it, leaving the database as it was."""
    store = tmp_path / "store.db"
    env = _env(tmp_path / "home", TRAINFORGE_DATABASE_URL=f"sqlite:///{store}")
    refused = _cli(env, "tokens", "create", "--team", "vision")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "run `trainforge db upgrade` first" in refused.stdout
    assert _sqlite_tables(store) == set(), "tokens created tables"

    assert _cli(env, "db", "upgrade").returncode == 0
    created = _cli(env, "tokens", "create", "--team", "vision")
    assert created.returncode == 0, created.stdout + created.stderr
    assert created.stdout.split()[-1].startswith("tf_")


def _sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
