"""The job-spec contract: bounded, strict, and messages that say what to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainforge.errors import SpecError
from trainforge.spec import JobSpec, TrainParams, json_schema_text, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "ppe-detector", "dataset": {"uri": "s3://datasets/ppe/v3/"}}


def test_minimal_spec_gets_ultralytics_defaults() -> None:
    spec = parse_spec(MINIMAL)
    assert spec.kind == "train"
    assert spec.train.epochs == 100 and spec.train.imgsz == 640 and spec.train.lr0 == 0.01
    assert spec.train.augment.mosaic == 1.0 and spec.train.augment.fliplr == 0.5


def test_design_doc_example_parses() -> None:
    spec = load_spec(
        """
kind: train
name: ppe-detector
dataset: {uri: s3://datasets/ppe/v3/}
model:   {base: yolov8n.pt}
train:   {epochs: 100, imgsz: 640, batch: 16, patience: 25, optimizer: AdamW, lr0: 0.01,
          seed: 42, cache: ram, amp: true, augment: {mosaic: 1.0, fliplr: 0.5}}
export:  {formats: [onnx, engine], half: true, int8: false, imgsz: 640}
resources: {gpus: 1, gpu_type: a10g, cpus: 8, memory: 32Gi}
"""
    )
    assert spec.train.optimizer == "AdamW"
    assert spec.export is not None and [f.value for f in spec.export.formats] == ["onnx", "engine"]


def test_unknown_key_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**MINIMAL, "train": {"epochs": 3, "lr": 0.1}})
    message = str(info.value)
    assert "train.lr" in message and "unknown key 'lr'" in message
    assert "lr0" in message and "epochs" in message


def test_nested_unknown_key_in_augment() -> None:
    with pytest.raises(SpecError, match=r"train\.augment\.mosiac: unknown key 'mosiac'.*mosaic"):
        parse_spec({**MINIMAL, "train": {"augment": {"mosiac": 0.5}}})


@pytest.mark.parametrize(
    ("train", "field"),
    [
        ({"epochs": 0}, "train.epochs"),
        ({"epochs": 1001}, "train.epochs"),
        ({"imgsz": 100}, "train.imgsz"),
        ({"imgsz": 4096}, "train.imgsz"),
        ({"lr0": 0}, "train.lr0"),
        ({"batch": 0}, "train.batch"),
        ({"optimizer": "LBFGS"}, "train.optimizer"),
        ({"cache": "gpu"}, "train.cache"),
    ],
)
def test_out_of_bounds_values_are_refused_with_the_field_path(train: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec({**MINIMAL, "train": train})


def test_unsupported_export_format_is_refused_not_dropped() -> None:
    with pytest.raises(SpecError, match="unsupported export format.*tflite"):
        parse_spec({**MINIMAL, "export": {"formats": ["onnx", "tflite"]}})


def test_sweep_space_only_over_tunable_hyperparameters() -> None:
    sweep = {"space": {"lr0": {"loguniform": [1e-4, 1e-1]}, "data": {"choice": ["x"]}}}
    with pytest.raises(SpecError, match="cannot search over data"):
        parse_spec({**MINIMAL, "kind": "sweep", "sweep": sweep})
    ok = parse_spec({**MINIMAL, "kind": "sweep",
                     "sweep": {"space": {"lr0": {"loguniform": [1e-4, 1e-1]}}}})
    assert ok.sweep is not None and ok.sweep.space["lr0"].loguniform == (1e-4, 1e-1)


def test_sweep_kind_requires_its_section() -> None:
    with pytest.raises(SpecError, match="needs a sweep section"):
        parse_spec({**MINIMAL, "kind": "sweep"})


def test_domain_needs_exactly_one_form() -> None:
    with pytest.raises(SpecError, match="exactly one"):
        parse_spec({**MINIMAL, "kind": "sweep",
                    "sweep": {"space": {"lr0": {"uniform": [0.1, 0.2], "choice": [0.1]}}}})


def test_names_match_ultralytics_default_cfg() -> None:
    """Every TrainParams/Augment field exists in ultralytics/cfg/default.yaml with our default."""
    yaml = pytest.importorskip("yaml")
    cfg_mod = pytest.importorskip("ultralytics.cfg")
    cfg = yaml.safe_load((Path(cfg_mod.__file__).parent / "default.yaml").read_text())
    params = TrainParams()
    for name in params.model_dump(exclude={"augment"}):
        assert name in cfg, f"{name} is not an Ultralytics train argument"
    for name, value in params.augment.model_dump().items():
        assert name in cfg, f"{name} is not an Ultralytics augmentation argument"
        assert cfg[name] == value, f"default of {name}: ours {value}, Ultralytics {cfg[name]}"
    for name in ("epochs", "imgsz", "batch", "lr0", "lrf", "momentum", "weight_decay"):
        assert cfg[name] == getattr(params, name), name


def test_published_json_schema_matches_the_code() -> None:
    published = ROOT / "docs" / "jobspec.schema.json"
    assert published.read_text() == json_schema_text(), (
        "docs/jobspec.schema.json drifted from trainforge/spec.py: run `make schema`"
    )
    assert json.loads(published.read_text())["additionalProperties"] is False


def test_spec_roundtrips_through_json() -> None:
    spec = parse_spec({**MINIMAL, "export": {"formats": ["onnx"]}})
    assert JobSpec.model_validate_json(spec.to_json()) == spec
