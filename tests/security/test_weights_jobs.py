"""The attack, reproduced through the real job entrypoints run as the dispatcher runs them.

``python -m jobs.train|jobs.sweep|jobs.export --spec URI`` in a subprocess, with its base
weights a malicious ``.pt`` given as ``file://`` and as ``s3://`` (a loopback S3 server): the
job must exit 1 with ``weights_unsafe`` in its FAILED event and its log, before any training,
and the file's payload must never run. Genuine checkpoints still fine-tune and resume.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.fixtures.checkpoints import GenuineCheckpoints
from tests.fixtures.malicious import (
    eval_yaml_checkpoint,
    legacy_weights,
    modelless_weights,
    poisoned_checkpoint,
    reduce_weights,
    unpickles_to_sentinel,
)
from tests.fixtures.training import (
    JobRun,
    JobRunner,
    RayHead,
    RecordingAPI,
    head_env,
    tiny_spec,
)
from trainforge import layout


@dataclass(frozen=True)
class Attack:
    """One kind of malicious weights: how to make it, what the refusal must say, and whether
    an unsafe load of it writes the sentinel (the control that makes the test meaningful)."""

    make: Callable[[GenuineCheckpoints, Path, Path], Path]
    says: str
    live: bool = True


ATTACKS: dict[str, Attack] = {
    "os.system": Attack(lambda g, d, s: reduce_weights(d, s, "os.system"),
                        "reference posix.system, which is not part of an Ultralytics model"),
    "exec": Attack(lambda g, d, s: reduce_weights(d, s, "exec"),
                   "reference builtins.exec, which is not part of an Ultralytics model"),
    "eval": Attack(lambda g, d, s: reduce_weights(d, s, "eval"),
                   "reference builtins.eval, which is not part of an Ultralytics model"),
    "nested": Attack(lambda g, d, s: poisoned_checkpoint(g.best, d, s),
                     "reference builtins.exec, which is not part of an Ultralytics model"),
    "legacy-format": Attack(lambda g, d, s: legacy_weights(d, s),
                            "reference posix.system, which is not part of an Ultralytics model"),
    "yaml-code": Attack(lambda g, d, s: eval_yaml_checkpoint(g.best, d, s),
                        "model YAML's activation", live=False),
    "no-model": Attack(lambda g, d, s: modelless_weights(d),
                       "hold no Ultralytics detection model", live=False),
}


def _runner(tmp_path: Path, api: RecordingAPI, module: str, bucket: str | None,
            head: RayHead | None = None) -> JobRunner:
    readable = ("file:///",) + ((f"s3://{bucket}/",) if bucket else ())
    return JobRunner(home=tmp_path / "home", artifacts_uri=f"file://{tmp_path}/artifacts",
                     models_uri=f"file://{tmp_path}/models", api=api, module=module,
                     readable=readable, env=head_env(head) if head else {})


def _weights_uri(path: Path, scheme: str, bucket: str | None,
                 request: pytest.FixtureRequest) -> str:
    """``file://`` the path, or ``s3://`` after uploading it to the loopback S3 server."""
    if scheme == "file":
        return f"file://{path}"
    assert bucket is not None
    key = f"uploads/{path.name}"
    endpoint = request.getfixturevalue("s3_server")
    boto3.client("s3", endpoint_url=endpoint).upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def _bucket(scheme: str, request: pytest.FixtureRequest) -> str | None:
    return str(request.getfixturevalue("s3_bucket")) if scheme == "s3" else None


def _assert_refused(run: JobRun, api: RecordingAPI, tmp_path: Path, uri: str, says: str,
                    sentinel: Path) -> None:
    output = run.output
    assert run.returncode == 1, output[-5000:]
    failed = api.final_state(run.job_id)
    assert (failed["state"], failed["error_code"]) == ("FAILED", "weights_unsafe"), failed
    assert f"weights {uri}" in failed["reason"] and says in failed["reason"], failed["reason"]
    assert "trainforge loads only Ultralytics checkpoints" in failed["reason"]
    assert "[weights_unsafe]" in output or "(weights_unsafe)" in output, output[-3000:]
    log = tmp_path / "artifacts" / layout.attempt_log_key(run.job_id, 1)
    assert "weights_unsafe" in log.read_text(), "the shipped log names the code"
    # Nothing trained: no Ray, no worker, no epoch.
    assert "step ray-connect" not in output and "step train" not in output
    assert api.epochs(run.job_id) == [] and not api.message(run.job_id, "training worker")
    assert not sentinel.exists(), "the payload ran inside the job"


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["file", "s3"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_train_job_refuses_malicious_weights(
        attack: str, scheme: str, tmp_path: Path, recording_api: RecordingAPI,
        tiny_dataset: Path, genuine_checkpoints: GenuineCheckpoints,
        request: pytest.FixtureRequest) -> None:
    sentinel = tmp_path / "sentinel"
    bucket = _bucket(scheme, request)
    weights = ATTACKS[attack].make(genuine_checkpoints, tmp_path / "uploads" / "x.pt", sentinel)
    uri = _weights_uri(weights, scheme, bucket, request)
    runner = _runner(tmp_path, recording_api, "jobs.train", bucket)
    run = runner.run(f"job-{attack}-{scheme}",
                     tiny_spec(f"file://{tiny_dataset}", model={"base": uri}), timeout=300)
    _assert_refused(run, recording_api, tmp_path, uri, ATTACKS[attack].says, sentinel)
    if ATTACKS[attack].live:
        assert unpickles_to_sentinel(weights, sentinel), "control: the file is a live attack"


@pytest.mark.slow
@pytest.mark.parametrize(("attack", "scheme"), [("os.system", "file"), ("nested", "s3"),
                                                ("yaml-code", "file")])
def test_a_sweep_job_refuses_malicious_weights(
        attack: str, scheme: str, tmp_path: Path, recording_api: RecordingAPI,
        tiny_dataset: Path, genuine_checkpoints: GenuineCheckpoints,
        request: pytest.FixtureRequest) -> None:
    from tests.fixtures.training import sweep_spec

    sentinel = tmp_path / "sentinel"
    bucket = _bucket(scheme, request)
    weights = ATTACKS[attack].make(genuine_checkpoints, tmp_path / "uploads" / "x.pt", sentinel)
    uri = _weights_uri(weights, scheme, bucket, request)
    runner = _runner(tmp_path, recording_api, "jobs.sweep", bucket)
    run = runner.run(f"sweep-{attack}-{scheme}",
                     sweep_spec(f"file://{tiny_dataset}", model={"base": uri}), timeout=300)
    _assert_refused(run, recording_api, tmp_path, uri, ATTACKS[attack].says, sentinel)
    assert "step sweep" not in run.output


def _export_spec(dataset: Path, base: str) -> dict[str, Any]:
    return {"kind": "export", "name": "shapes", "dataset": {"uri": f"file://{dataset}"},
            "model": {"base": base}, "export": {"formats": ["onnx"]}}


@pytest.mark.slow
@pytest.mark.parametrize(("attack", "scheme"), [
    *((name, "file") for name in ATTACKS),
    ("os.system", "s3"), ("nested", "s3"), ("legacy-format", "s3"), ("no-model", "s3"),
])
def test_an_export_job_refuses_malicious_weights(
        attack: str, scheme: str, tmp_path: Path, recording_api: RecordingAPI,
        tiny_dataset: Path, genuine_checkpoints: GenuineCheckpoints,
        request: pytest.FixtureRequest) -> None:
    sentinel = tmp_path / "sentinel"
    bucket = _bucket(scheme, request)
    weights = ATTACKS[attack].make(genuine_checkpoints, tmp_path / "uploads" / "x.pt", sentinel)
    uri = _weights_uri(weights, scheme, bucket, request)
    runner = _runner(tmp_path, recording_api, "jobs.export", bucket)
    run = runner.run(f"export-{attack}-{scheme}", _export_spec(tiny_dataset, uri), timeout=300)
    output = run.output
    assert run.returncode == 1, output[-5000:]
    failed = recording_api.final_state(run.job_id)
    assert (failed["state"], failed["error_code"]) == ("FAILED", "weights_unsafe"), failed
    assert f"weights {uri}" in failed["reason"] and ATTACKS[attack].says in failed["reason"]
    log = tmp_path / "artifacts" / layout.attempt_log_key(run.job_id, 1)
    assert f"job {run.job_id} FAILED [weights_unsafe]" in log.read_text()
    assert "ONNX" not in output and not (tmp_path / "models").exists(), "nothing was exported"
    assert not sentinel.exists(), "the payload ran inside the job"


@pytest.mark.slow
def test_genuine_weights_fine_tune_in_hardened_processes(
        tmp_path: Path, recording_api: RecordingAPI, tiny_dataset: Path,
        genuine_checkpoints: GenuineCheckpoints, ray_head: RayHead) -> None:
    runner = _runner(tmp_path, recording_api, "jobs.train", None, ray_head)
    base = f"file://{genuine_checkpoints.best}"
    run = runner.run("job-genuine", tiny_spec(f"file://{tiny_dataset}", model={"base": base},
                                              train={"epochs": 1}), timeout=600)
    assert run.returncode == 0, run.output[-5000:]
    assert recording_api.states(run.job_id) == ["RUNNING", "SUCCEEDED"]
    assert "an Ultralytics detection checkpoint" in run.output
    # The entrypoint and the Ray Train worker (a process of its own) both hardened.
    hardened = [line for line in run.output.splitlines() if "weights loading hardened" in line]
    assert any("pid=" in line for line in hardened), "\n".join(hardened) or run.output[-3000:]
    assert any("pid=" not in line for line in hardened), "\n".join(hardened)


@pytest.mark.slow
def test_a_genuine_mid_run_checkpoint_resumes_in_a_hardened_worker(
        tmp_path: Path, recording_api: RecordingAPI, tiny_dataset: Path,
        genuine_checkpoints: GenuineCheckpoints, ray_head: RayHead) -> None:
    """Attempt 2 of a job finds attempt 1's last.pt (epoch 1 of 2, optimizer state) in the
    artifacts store and resumes it: read_checkpoint and the resumed training load it safely."""
    runner = _runner(tmp_path, recording_api, "jobs.train", None, ray_head)
    job = "job-resume"
    checkpoint = tmp_path / "artifacts" / layout.checkpoint_key(job)
    checkpoint.parent.mkdir(parents=True)
    shutil.copyfile(genuine_checkpoints.mid_run, checkpoint)
    run = runner.run(job, tiny_spec(f"file://{tiny_dataset}", train={"epochs": 2}), attempt=2,
                     timeout=600)
    assert run.returncode == 0, run.output[-5000:]
    [resumed] = recording_api.message(job, "resuming from epoch")
    assert resumed["data"]["resumed_epoch"] == 2
    assert recording_api.epochs(job) == [2]


@pytest.mark.slow
def test_a_sweep_fine_tunes_genuine_weights_in_hardened_trials(
        tmp_path: Path, recording_api: RecordingAPI, tiny_dataset: Path,
        genuine_checkpoints: GenuineCheckpoints, ray_head: RayHead) -> None:
    """Ray Tune trials and the task that evaluates the best one are processes of their own."""
    from tests.fixtures.training import sweep_spec

    runner = _runner(tmp_path, recording_api, "jobs.sweep", None, ray_head)
    base = f"file://{genuine_checkpoints.best}"
    spec = sweep_spec(f"file://{tiny_dataset}", model={"base": base}, train={"epochs": 1},
                      sweep={"trials": 2})
    run = runner.run("sweep-genuine", spec, timeout=900)
    assert run.returncode == 0, run.output[-5000:]
    assert recording_api.states(run.job_id) == ["RUNNING", "SUCCEEDED"]
    hardened = "\n".join(line for line in run.output.splitlines()
                          if "weights loading hardened" in line)
    assert "(run_trial pid=" in hardened, run.output[-3000:]
    assert "(finish_best_trial pid=" in hardened, hardened
    assert recording_api.epochs(run.job_id) == [1, 1], "both trials trained an epoch"
