"""docs/api.md runs as written: its curl and Python-client examples, in the order a reader
meets them, in one shell against a real `trainforge serve` (embedded, offline, real jobs).

Only what a reader's second terminal could not share with the test differs: the server is the
one this test starts (on a free port, so ``http://127.0.0.1:8000`` in the docs is replaced by
its URL, and the docs' ``trainforge serve`` line is not run), the webhook receiver the docs
start listens on a free port too (``DEPLOYER_PORT=8001`` is replaced), ``TRAINFORGE_HOME`` is
the test's own, and the blocks of ``trainforge jobs …``/``trainforge schedules …`` commands are
left to the CLI tests (tests/api/test_cli.py, tests/api/test_first_hour_cli.py). curl answers
errors with exit 0, so what the blocks printed and what the server holds afterwards are checked.

A block a reader runs on another machine (Triton's ``tritonserver``) opens with the fence
info string ``bash elsewhere``: GitHub still highlights it as bash, and this test skips it.
Such a block may hold only the commands of :data:`ELSEWHERE_COMMANDS` (checked by
``test_the_doc_has_the_examples_this_test_runs``), so the marker cannot hide an example of
trainforge's own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.embedded import ServeProcess, dev_client, embedded_env
from tests.fixtures.network import free_port

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
_BLOCK = re.compile(r"^```(bash|python)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_CLI_ONLY = re.compile(r"^trainforge (serve|jobs|schedules) ", re.MULTILINE)
#: The info-string word of a block that runs on another machine.
ELSEWHERE = "elsewhere"
#: The only commands an ``elsewhere`` block may hold: other products' own.
ELSEWHERE_COMMANDS = ("tritonserver",)
DOC_SERVER = "http://127.0.0.1:8000"
DOC_DEPLOYER_PORT = "DEPLOYER_PORT=8001"


def doc_blocks() -> list[tuple[str, list[str], str]]:
    """Every bash and python block of the doc: (language, info-string words after it, body)."""
    return [(language, info.split(), body) for language, info, body in _BLOCK.findall(
        DOC.read_text())]


def doc_script() -> str:
    """The doc's runnable blocks as one bash script (python blocks run by this interpreter)."""
    parts = ["set -euo pipefail"]
    for language, words, body in doc_blocks():
        if ELSEWHERE in words or _CLI_ONLY.search(body):
            continue
        parts.append(body if language == "bash" else f'"$PY" - <<\'PYTHON\'\n{body}PYTHON')
    return "\n".join(parts) + "\n"


def test_the_doc_has_the_examples_this_test_runs() -> None:
    script = doc_script()
    for step in ("trainforge dataset synth", "POST \"$TRAINFORGE_URL/v1/jobs\"", "/events",
                 "/resume", "/artifacts", "/v1/datasets/validate", "client.wait(",
                 "/v1/schedules", "/aliases/champion", "/versions/champion\" \\", "sha256sum -c",
                 "trainforge models pull $MODEL@champion --layout triton", "client.pull_model(",
                 "client.verify_model(", "/v1/webhooks\" \\", "verifier.verify(",
                 "python3 deployer.py", "/versions/latest", "grep deployed deployer.log",
                 "/deliveries", "client.webhook_deliveries(", "-X DELETE"):
        assert step in script, step
    assert "trainforge serve" not in script
    assert script.count(DOC_DEPLOYER_PORT) == 1
    elsewhere = [body for _, words, body in doc_blocks() if ELSEWHERE in words]
    assert elsewhere, "the Triton line is no longer fenced as `bash elsewhere`"
    for body in elsewhere:
        for line in body.splitlines():
            command = line.strip()
            assert not command or command.startswith("#") or command.split()[0] in \
                ELSEWHERE_COMMANDS, f"{line!r} is skipped as run elsewhere"


@pytest.mark.slow  # trains two small jobs for real (about a minute each on a CPU)
def test_every_curl_and_client_example_runs_as_written(serve_process: ServeProcess,
                                                       tmp_path: Path) -> None:
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    assert not missing, f"the doc's examples need {missing}: run `make setup` (scripts/setup.sh)"
    home = tmp_path / "home"
    env = embedded_env(home)
    reader = tmp_path / "reader"  # the reader's working directory (data/shapes goes there)
    reader.mkdir()
    with serve_process(env, tmp_path / "serve.log") as url:
        script = (doc_script().replace(DOC_SERVER, url)
                  .replace(DOC_DEPLOYER_PORT, f"DEPLOYER_PORT={free_port()}"))
        out, err, returncode = run_in_own_group(script, reader, {
            **env, "PY": sys.executable, "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"})
        assert returncode == 0, out[-4000:] + err[-4000:]
        with dev_client(url, home) as api:
            jobs = api.get("/v1/jobs").json()["items"]
            model = api.get("/v1/models/shapes-detector").json()
            schedules = api.get("/v1/schedules").json()["items"]
            webhooks = api.get("/v1/webhooks").json()["items"]
    deployer_log = (reader / "deployer.log").read_text()
    assert [j["state"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], jobs  # python's, curl's
    python_job, curl_job = jobs[0]["id"], jobs[1]["id"]
    assert '"state":"QUEUED"' in (reader / "job.json").read_text()
    assert curl_job in (reader / "job.json").read_text()
    assert "event: state" in out and '"to_state":"SUCCEEDED"' in out  # the SSE stream
    assert "job_state_conflict" in out  # cancelling the finished job
    assert "job_not_resumable" in out  # resuming it
    assert '"ok":true' in out  # the dataset validation
    assert "best.pt" in out and (reader / "best.pt").stat().st_size > 100_000
    assert "SUCCEEDED" in out and (reader / "shapes-artifacts" / "train" / "best.pt").exists()
    assert [s["paused"] for s in schedules] == [True]
    # The champion: first the curl job's version, deployed by hand as Triton version 1 ...
    assert f'"version":"{curl_job}","previous":null' in out
    assert "model.onnx: OK" in out  # the link and sha256 of step 2
    assert triton_version(reader, 1) == curl_job
    assert (reader / "shapes-onnx" / "model.onnx").stat().st_size > 100_000
    # ... then the Python client's, which the webhook receiver deployed as version 2.
    assert [(m["seq"], m["version"], m["previous"]) for m in model["history"]
            if m["alias"] == "champion"] == [(1, curl_job, None), (2, python_job, curl_job)]
    assert "alias.moved evt_" in deployer_log, deployer_log
    assert (f"deployed shapes-detector@{python_job} as model_repository/shapes-detector/2"
            in deployer_log), deployer_log
    assert triton_version(reader, 2) == python_job
    assert f"@{python_job} is version 2" in (
        reader / "model_repository" / "shapes-detector" / "config.pbtxt").read_text()
    assert '"state":"delivered"' in out and '"last_status":204' in out  # the signature held
    assert "alias.moved delivered 1 204" in out
    assert webhooks == []  # the doc unsubscribed
    assert "whsec_" not in out + err  # the secret is never printed


def triton_version(reader: Path, number: int) -> str:
    """The trainforge version a Triton version folder of the reader's repository holds."""
    manifest = reader / "model_repository" / "shapes-detector" / str(number) / "manifest.json"
    assert (manifest.parent / "model.onnx").stat().st_size > 100_000
    return str(json.loads(manifest.read_text())["version"])


def run_in_own_group(script: str, cwd: Path, env: dict[str, str]) -> tuple[str, str, int]:
    """``bash -c script`` in a process group of its own, which is killed afterwards: the doc
    starts its webhook receiver in the background, and a failing block must not leave it
    running. Returns stdout, stderr and the exit status."""
    process = subprocess.Popen(["bash", "-c", script], cwd=cwd, text=True, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"the doc's examples ran over 600 s:\n{out[-4000:]}{err[-4000:]}")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    return out, err, process.returncode
