"""The TensorRT path: FP16 and INT8 engines built on the GPU, gated against best.pt on the GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.export.convert import cuda_gpu, tensorrt_unavailable_reason
from jobs.export.pipeline import export_and_publish
from tests.fixtures.checkpoints import Trained
from trainforge.registry import read_manifest, verify
from trainforge.spec import parse_spec


@pytest.mark.gpu
@pytest.mark.slow
def test_tensorrt_engines_are_built_gated_and_published(request: pytest.FixtureRequest,
                                                         tmp_path: Path) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:  # decided before the trained-model fixture spends a minute
        pytest.skip(f"TensorRT path not run: {reason}")
    trained: Trained = request.getfixturevalue("trained")
    gpu = cuda_gpu()
    assert gpu is not None
    spec = parse_spec({"kind": "export", "name": "shapes", "dataset": {"uri": str(trained.dataset)},
                       "model": {"base": f"file://{trained.weights}"},
                       "export": {"formats": ["onnx", "engine"], "half": True, "int8": True}})
    outcome = export_and_publish(spec, job_id="gpu-1", weights=trained.weights,
                                 data_yaml=trained.data_yaml, workdir=tmp_path / "work",
                                 models_uri=f"file://{tmp_path}/models")
    assert outcome.published is not None
    manifest = read_manifest(outcome.published.manifest_uri)
    published = {a["name"] for a in manifest["artifacts"]}
    for key, precision in (("engine-fp16", "fp16"), ("engine-int8", "int8")):
        result = outcome.formats[key]
        print(f"{key}: {result.status} Δ mAP50-95 {result.map_delta} latency {result.latency} "
              f"vs PyTorch {result.reference_latency} {result.reason}")
        assert result.artifact == f"model-{gpu.slug}-{precision}.engine"
        assert result.device == "cuda:0" and result.map_delta is not None
        assert result.latency and result.latency["device"] == "cuda:0"
        assert result.status in ("passed", "failed")
        assert (result.artifact in published) is (result.status == "passed")
    assert outcome.formats["engine-fp16"].status == "passed", outcome.formats["engine-fp16"].reason
    assert verify(outcome.published.manifest_uri) == []
