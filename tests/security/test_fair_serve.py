"""`trainforge serve`'s defaults share the machine: two jobs at once, one per team, so a second
team's job runs while the first team's long job does (a real server process, tests.standin)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.fixtures.embedded import ServeProcess
from tests.security.support import job, served, submit, wait_for


def test_a_second_teams_job_runs_beside_a_long_job_and_ahead_of_its_teams_backlog(
    serve_process: ServeProcess, tmp_path: Path,
) -> None:
    with served(serve_process, tmp_path, tmp_path / "home") as server:
        created = subprocess.run(
            [sys.executable, "-m", "trainforge", "tokens", "create", "--team", "robots"],
            env=server.env, capture_output=True, text=True, timeout=120)
        assert created.returncode == 0, created.stdout + created.stderr
        robots = created.stdout.split()[-1]
        long_job = submit(server, "sleep-long")  # team dev (the dev token)
        wait_for(server, long_job, {"RUNNING"})
        behind = submit(server, "ppe-behind")
        other = submit(server, "ppe-robots", token=robots)
        done = wait_for(server, other, {"SUCCEEDED", "FAILED", "CANCELLED"}, token=robots,
                        timeout_s=60)
        assert done["state"] == "SUCCEEDED", done
        # dev is at its one running job: its second job waited although it came first.
        assert job(server, long_job)["state"] == "RUNNING"
        assert job(server, behind)["state"] == "QUEUED"
        cancel = httpx.post(f"{server.url}/v1/jobs/{long_job}/cancel", headers=server.headers())
        assert cancel.status_code == 200, cancel.text
        assert wait_for(server, long_job, {"CANCELLED", "FAILED", "SUCCEEDED"})["state"] == \
            "CANCELLED"
        assert wait_for(server, behind, {"SUCCEEDED", "FAILED", "CANCELLED"})["state"] == \
            "SUCCEEDED"
