"""The training job on a GPU: Ray Train gives the worker the GPU and Ultralytics trains on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.training import JobRunner, tiny_spec

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count())


@pytest.mark.skipif(_gpus() < 1, reason="needs an NVIDIA GPU (torch sees none here)")
def test_train_job_on_one_gpu(local_runner: JobRunner, tiny_dataset: Path) -> None:
    spec = tiny_spec(f"file://{tiny_dataset}", resources={"gpus": 1, "cpus": 2},
                     train={"amp": True, "epochs": 3})
    run = local_runner.run("job-gpu", spec)
    assert run.returncode == 0, run.output[-5000:]
    assert "(1 GPUs," in run.output, "the local Ray sees the GPU"
    assert "CUDA:0" in run.output, "Ultralytics trained on the GPU the worker holds"
    assert local_runner.api.epochs("job-gpu") == [1, 2, 3]
    assert local_runner.api.final_state("job-gpu")["state"] == "SUCCEEDED"

