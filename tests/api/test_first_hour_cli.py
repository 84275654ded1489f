"""A newcomer's first hour through the real ``trainforge`` command: the dashboard and the dev
token are where ``serve`` says, ``dataset synth`` prints the line a spec needs, the example
spec's placeholder and the usual mistakes are refused with what to change, at submit."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.fixtures.embedded import ServeProcess, embedded_env

ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainforge", *args], env=env, cwd=cwd,
                          text=True, capture_output=True, timeout=120)


def _env(tmp_path: Path) -> dict[str, str]:
    return {**embedded_env(tmp_path / "home"), "COLUMNS": "200",
            "TRAINFORGE_DISPATCHER_LOCAL_MODULE": "tests.standin"}


def test_synth_prints_a_line_to_paste_into_a_spec(tmp_path: Path) -> None:
    made = _cli(_env(tmp_path), "dataset", "synth", "data/shapes", "--classes", "1",
                "--train", "2", "--val", "1", "--test", "0", "--imgsz", "32", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    root = (tmp_path / "data" / "shapes").resolve()
    assert made.stdout.splitlines()[-1] == f'dataset: {{uri: "file://{root}/"}}   # for a job spec'



@pytest.mark.parametrize(("text", "says"), [
    (None, ["dataset.uri: Value error, @DATASET_URI@ is a placeholder of an example spec: "
            "replace it with the dataset's folder", "trainforge dataset synth DIR"]),
    ("name: x\ndataset: {uri: s3://d/x/}\ntrain: {epoch: 3, mosaic: 0.5}\n",
     ["train.epoch: unknown key 'epoch'; did you mean 'epochs'?",
      "train.mosaic: unknown key 'mosaic'; did you mean train.augment.mosaic?"]),
    ("name: x\ndataset: {uri: s3://d/x/}\ndevice: cpu\n",
     ["unknown key 'device'; trainforge picks the device from resources: "
      "resources.gpus_per_worker: 0 trains on the CPU"]),
    ("name: x\ndataset: {uri: s3://d/x/}\ntrain:\n\tepochs: 3\n",
     ["YAML forbids tabs: indent with spaces", "line 4, column 1"]),
])
def test_submit_checks_the_spec_on_this_machine_first(
    tmp_path: Path, text: str | None, says: list[str]
) -> None:
    spec = ROOT / "examples" / "shapes-demo.yaml"  # unedited
    if text is not None:
        spec = tmp_path / "spec.yaml"
        spec.write_text(text)
    # No server at this URL: the spec is refused before anything is sent.
    refused = _cli({**_env(tmp_path), "TRAINFORGE_URL": "http://127.0.0.1:9"}, "jobs", "submit",
                   str(spec))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    output = " ".join(refused.stdout.split())
    for expected in says:
        assert " ".join(expected.split()) in output, refused.stdout


def test_list_refuses_a_state_that_is_not_one(tmp_path: Path) -> None:
    refused = _cli({**_env(tmp_path), "TRAINFORGE_URL": "http://127.0.0.1:9"}, "jobs", "list",
                   "--state", "runing")
    assert refused.returncode == 2
    assert "--state: 'runing' is not a valid JobState; use QUEUED, STARTING" in refused.stdout


@pytest.mark.slow  # starts `trainforge serve` (stand-in jobs: nothing trains)
def test_serve_names_the_dashboard_and_refuses_what_the_job_would(
        serve_process: ServeProcess, tmp_path: Path) -> None:
    env = _env(tmp_path)
    home = Path(env["TRAINFORGE_HOME"])
    log = tmp_path / "serve.log"
    with serve_process(env, log) as url:
        env = {**env, "TRAINFORGE_URL": url}
        said = log.read_text()
        assert f"dashboard: {url}/ui/ (sign in with the dev token: cat {home}/dev-token)" in said
        root = httpx.get(f"{url}/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        assert httpx.get(f"{url}/", follow_redirects=True).url.path == "/ui/login"

        made = _cli(env, "dataset", "synth", "shapes", "--classes", "1", "--train", "2",
                    "--val", "1", "--test", "0", "--imgsz", "32", cwd=tmp_path)
        dataset_line = made.stdout.splitlines()[-1].split("#")[0].strip()
        spec = tmp_path / "spec.yaml"
        spec.write_text(f"name: shapes\n{dataset_line}\nmodel: {{base: yolov8n.yaml}}\n")
        done = _cli(env, "jobs", "submit", str(spec), "--wait")
        assert done.returncode == 0, done.stdout + done.stderr
        job = re.search(r"submitted (j[0-9a-z]+)", done.stdout).group(1)  # type: ignore[union-attr]
        for state in ("succeeded", "Succeeded"):
            listed = _cli(env, "jobs", "list", "--state", state)
            assert listed.returncode == 0 and job in listed.stdout, listed.stdout

        shapes = tmp_path / "shapes"
        for text, says in [
            (f"name: shapes\ndataset: {{uri: {shapes}/data.yaml}}\nmodel: {{base: yolov8n.yaml}}\n",
             f"{shapes}/data.yaml is a file: pass the folder, not data.yaml"),
            (f"name: shapes\ndataset: {{uri: {tmp_path}/nope/}}\n",
             f"{tmp_path}/nope does not exist: pass the dataset root"),
            # The default base, yolov8n.pt, on this offline server (embedded_env: YOLO_OFFLINE=1)
            (f"name: shapes\ndataset: {{uri: {shapes}/}}\n",
             "use yolov8n.yaml to train from scratch, a local .pt"),
        ]:
            spec.write_text(text)
            refused = _cli(env, "jobs", "submit", str(spec))
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert says in " ".join(refused.stdout.split()), refused.stdout


def test_the_server_root_leads_to_the_dashboard(client: TestClient) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    assert client.get("/").url.path == "/ui/login"  # /ui/ → /ui/jobs → sign in first


def test_the_state_filter_takes_any_case(client: TestClient, auth: dict[str, str]) -> None:
    for state in ("running", "Running", "RUNNING"):
        assert client.get(f"/v1/jobs?state={state}", headers=auth).status_code == 200
    refused = client.get("/v1/jobs?state=runing", headers=auth)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["path"] == "query.state.0"
