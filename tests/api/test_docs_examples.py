"""docs/api.md runs as written: its curl and Python-client examples, in the order a reader
meets them, in one shell against a real `trainforge serve` (embedded, offline, real jobs).

Only what a reader's second terminal could not share with the test differs: the server is the
one this test starts (on a free port, so ``http://127.0.0.1:8000`` in the docs is replaced by
its URL, and the docs' ``trainforge serve`` line is not run), ``TRAINFORGE_HOME`` is the test's
own, and the blocks of ``trainforge jobs …``/``trainforge schedules …`` commands are left to
the CLI tests (tests/api/test_cli.py, tests/api/test_first_hour_cli.py). curl answers errors
with exit 0, so what the blocks printed and what the server holds afterwards are checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.embedded import ServeProcess, dev_client, embedded_env

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
_BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_CLI_ONLY = re.compile(r"^trainforge (serve|jobs|schedules) ", re.MULTILINE)


def doc_script() -> str:
    """The doc's runnable blocks as one bash script (python blocks run by this interpreter)."""
    parts = ["set -euo pipefail"]
    for language, body in _BLOCK.findall(DOC.read_text()):
        if _CLI_ONLY.search(body):
            continue
        parts.append(body if language == "bash" else f'"$PY" - <<\'PYTHON\'\n{body}PYTHON')
    return "\n".join(parts) + "\n"


def test_the_doc_has_the_examples_this_test_runs() -> None:
    script = doc_script()
    for step in ("trainforge dataset synth", "POST \"$TRAINFORGE_URL/v1/jobs\"", "/events",
                 "/artifacts", "/v1/datasets/validate", "client.wait(", "/v1/schedules",
                 "/aliases/champion"):
        assert step in script, step
    assert "trainforge serve" not in script


@pytest.mark.slow  # trains two small jobs for real (about a minute each on a CPU)
def test_every_curl_and_client_example_runs_as_written(serve_process: ServeProcess,
                                                       tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = embedded_env(home)
    reader = tmp_path / "reader"  # the reader's working directory (data/shapes goes there)
    reader.mkdir()
    with serve_process(env, tmp_path / "serve.log") as url:
        script = doc_script().replace("http://127.0.0.1:8000", url)
        ran = subprocess.run(
            ["bash", "-c", script], cwd=reader, text=True, capture_output=True, timeout=540,
            env={**env, "PY": sys.executable,
                 "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"},
        )
        assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
        out = ran.stdout
        with dev_client(url, home) as api:
            jobs = api.get("/v1/jobs").json()["items"]
            curl_job = (reader / "job.json").read_text()
            alias = api.get("/v1/models/shapes-detector").json()
            schedules = api.get("/v1/schedules").json()["items"]
    assert [j["state"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], jobs  # curl's, python's
    assert '"state":"QUEUED"' in curl_job and jobs[1]["id"] in curl_job
    assert "event: state" in out and '"to_state":"SUCCEEDED"' in out  # the SSE stream
    assert "job_state_conflict" in out  # cancelling the finished job
    assert '"ok":true' in out  # the dataset validation
    assert "best.pt" in out and (reader / "best.pt").stat().st_size > 100_000
    assert "SUCCEEDED" in out and (reader / "shapes-artifacts" / "train" / "best.pt").exists()
    assert [s["paused"] for s in schedules] == [True]
    assert f'"version":"{jobs[1]["id"]}"' in out
    assert "champion" in str(alias)
