"""`trainforge serve` keeps $TRAINFORGE_HOME private: after a real job ran, nothing under it
(the SQLite files, the secret key, the dev token, artifacts, the dispatcher's state, the run's
work directory) is readable or writable by group or others, whether the home is new or was
left readable by an older version. The server runs as a real process started with the usual
umask 022, and the job is tests.standin (no training).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from services.store import tokens
from tests.conftest import serve_process
from trainforge.datasets import synth
from trainforge.private import PRIVATE_UMASK, private_home, restrict_umask

ROOT = Path(__file__).resolve().parents[2]
#: yolov8n.yaml: the offline server (YOLO_OFFLINE=1) refuses the default yolov8n.pt at submit.
SPEC: dict[str, Any] = {"name": "ppe-detector", "model": {"base": "yolov8n.yaml"},
                        "train": {"epochs": 3}}


@dataclass
class Served:
    url: str
    home: Path
    dataset: Path
    env: dict[str, str]

    def headers(self, token: str | None = None) -> dict[str, str]:
        token = token or (self.home / "dev-token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}


def serve_env(home: Path, dataset: Path) -> dict[str, str]:
    """`trainforge serve`'s environment: tests.standin runs, every team may read ``dataset``."""
    path = os.environ.get("PYTHONPATH", "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINFORGE_")}
    return {
        **env,
        "PYTHONPATH": f"{ROOT}:{path}" if path else str(ROOT),
        "YOLO_OFFLINE": "1",
        "TRAINFORGE_HOME": str(home),
        "TRAINFORGE_DISPATCHER_LOCAL_MODULE": "tests.standin",
        "TRAINFORGE_DISPATCHER_POLL_INTERVAL_S": "0.2",
        "TRAINFORGE_DISPATCHER_RETRY_DELAY_S": "0",
        # Local datasets for every team (only read by versions with a storage access policy).
        "TRAINFORGE_STORAGE_POLICY": f'{{"default": {{"datasets": ["file://{dataset}/"]}}}}',
    }


def _usual_umask() -> None:
    os.umask(0o022)  # what a login shell gives: files 0644, directories 0755


@contextmanager
def served(tmp_path: Path, home: Path) -> Iterator[Served]:
    """`trainforge serve` on a free loopback port, started with umask 022; stopped after."""
    dataset = tmp_path / "dataset"
    if not dataset.exists():  # a real one: the server checks its data.yaml at submit
        synth(dataset, classes=1, train=2, val=1, test=0, imgsz=32)
    env = serve_env(home, dataset)
    log_path = tmp_path / f"serve-{home.name}.log"
    try:
        with serve_process(env, log_path, preexec_fn=_usual_umask) as url:
            yield Served(url, home, dataset, env)
    finally:
        print(log_path.read_text()[-4000:])


def submit(server: Served, name: str, token: str | None = None) -> str:
    body = {"spec": {**SPEC, "name": name, "dataset": {"uri": f"file://{server.dataset}/"}}}
    response = httpx.post(f"{server.url}/v1/jobs", json=body, headers=server.headers(token))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job(server: Served, job_id: str, token: str | None = None) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers(token))
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(server: Served, job_id: str, states: set[str], token: str | None = None,
             timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (got := job(server, job_id, token))["state"] not in states:
        assert time.monotonic() < deadline, f"{job_id} still {got['state']}, not in {states}"
        time.sleep(0.2)
    return got


def offenders(home: Path) -> list[str]:
    """Everything under ``home`` (itself included) with a permission bit for group or others."""
    found = []
    # os.walk lists symlinks to directories among the directories but does not follow them;
    # a directory's own entry is checked when the walk reaches it.
    for directory, subdirectories, files in os.walk(home):
        links = [n for n in subdirectories if (Path(directory) / n).is_symlink()]
        for path in [Path(directory), *(Path(directory) / n for n in [*files, *links])]:
            mode = path.lstat().st_mode
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{stat.filemode(mode)} {oct(mode & 0o777)} {path}")
    return sorted(found)


def _assert_private(home: Path, when: str) -> None:
    bad = offenders(home)
    if bad:
        print(f"readable by group or others {when}:\n" + "\n".join(bad))
    assert not bad, f"{len(bad)} path(s) under {home} not private {when}: {bad[:20]}"


def _run_one_job(server: Served) -> str:
    job_id = submit(server, "ppe-detector")
    done = wait_for(server, job_id, {"SUCCEEDED", "FAILED", "CANCELLED"})
    assert done["state"] == "SUCCEEDED", done
    assert done["progress"] == {"epoch": 3, "epochs": 3}
    log = httpx.get(f"{server.url}/v1/jobs/{job_id}/logs", headers=server.headers()).text
    # Every report of the job, its last (SUCCEEDED) included, was accepted.
    assert "epoch 3/3 done" in log and "API refused" not in log, log
    # The job has ended: its token, minted as the dispatcher does, is refused now.
    secret = (server.home / "secret-key").read_text().strip().encode()
    stale = httpx.post(
        f"{server.url}/internal/v1/jobs/{job_id}/events",
        json={"type": "progress", "epoch": 1, "epochs": 3, "metrics": {"forged": 1.0}},
        headers={"Authorization": f"Bearer {tokens.job_token(secret, job_id, 1)}"},
    )
    assert stale.status_code == 401, stale.text
    assert job(server, job_id)["metrics"] == done["metrics"]
    # The run reported SUCCEEDED before it exited; LocalBackend writes exit.json once it has:
    # from then on the run creates nothing more.
    exit_file = server.home / "dispatcher" / job_id / "1" / "exit.json"
    deadline = time.monotonic() + 60
    while not exit_file.is_file():
        assert time.monotonic() < deadline, f"the run did not exit: no {exit_file}"
        time.sleep(0.1)
    return job_id


def test_a_new_home_is_private_after_a_job_ran(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with served(tmp_path, home) as server:
        job_id = _run_one_job(server)
        # What a run leaves: its spec, log and outputs, and LocalBackend's attempt directory.
        assert (home / "dispatcher" / job_id / "1" / "exit.json").is_file()
        assert (home / "artifacts" / "jobs" / job_id / "attempts" / "1" / "log.txt").is_file()
        assert (home / "trainforge.db-wal").exists()
        _assert_private(home, "while serving")
    _assert_private(home, "after the server stopped")


def test_a_home_an_older_version_left_readable_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    previous = os.umask(0o022)
    try:
        home.mkdir()
        for name in ("artifacts", "dispatcher", "models"):
            (home / name).mkdir()
        conn = sqlite3.connect(home / "trainforge.db")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE leftover (x)")
        conn.commit()
        conn.close()
        (home / "secret-key").write_text("an-older-versions-embedded-secret-key\n")
    finally:
        os.umask(previous)
    for path in (home, home / "artifacts", home / "trainforge.db", home / "secret-key"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    # The test starts from a readable home: the home, 3 directories, the database, the key.
    assert len(offenders(home)) == 6, offenders(home)
    with served(tmp_path, home) as server:
        _run_one_job(server)
        _assert_private(home, "while serving")
    _assert_private(home, "after the server stopped")


def test_private_home_leaves_a_shared_directory_alone(tmp_path: Path) -> None:
    """TRAINFORGE_HOME=/tmp (or ~) must not make /tmp (or ~) 0700 for everyone else."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    assert private_home(shared) is False
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    own = tmp_path / "own"
    own.mkdir()
    own.chmod(0o755)
    assert private_home(own) is True
    assert stat.S_IMODE(own.stat().st_mode) == 0o700
    fresh = tmp_path / "a" / "b" / "home"
    assert private_home(fresh) is True
    for path in (tmp_path / "a", tmp_path / "a" / "b", fresh):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path


def test_restrict_umask_keeps_stricter_bits() -> None:
    previous = os.umask(0o277)
    try:
        assert restrict_umask() == 0o277
        assert os.umask(0o277) == 0o277
        os.umask(0o022)
        assert restrict_umask() == 0o022
        assert os.umask(0o022) == PRIVATE_UMASK
    finally:
        os.umask(previous)
