"""The words users bring from ``model.train()``: unknown keys say what was meant, ``device``
says where the device is chosen, an example's placeholder says what replaces it, a tab says
YAML forbids it, and a state filter takes any case."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainforge.errors import SpecError
from trainforge.spec import load_spec, parse_spec
from trainforge.states import JobState

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "ppe-detector", "dataset": {"uri": "s3://datasets/ppe/v3/"}}


def _message(spec: dict[str, object]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    return info.value.message


@pytest.mark.parametrize(("spec", "line"), [
    ({"train": {"epoch": 3}}, "train.epoch: unknown key 'epoch'; did you mean 'epochs'?"),
    ({"train": {"lr": 0.1}}, "train.lr: unknown key 'lr'; did you mean 'lr0'?"),
    ({"train": {"batch_size": 8}}, "train.batch_size: unknown key 'batch_size'; did you mean "
                                   "'batch'?"),
    ({"train": {"mosaic": 0.0}}, "train.mosaic: unknown key 'mosaic'; did you mean "
                                 "train.augment.mosaic?"),
    ({"fliplr": 0.0}, "fliplr: unknown key 'fliplr'; did you mean train.augment.fliplr?"),
    ({"epochs": 3}, "epochs: unknown key 'epochs'; did you mean train.epochs?"),
    ({"epoch": 3}, "epoch: unknown key 'epoch'; did you mean train.epochs?"),
    ({"data": "/x"}, "data: unknown key 'data'; did you mean dataset.uri?"),
    ({"workers": 2}, "workers: unknown key 'workers'; did you mean train.workers or "
                     "resources.workers?"),
    ({"kind": "sweep", "sweep": {"space": {"lr0": {"uniformm": [0.01, 0.1]}}}},
     "sweep.space.lr0.uniformm: unknown key 'uniformm'; did you mean 'uniform'?"),
])
def test_an_unknown_key_says_what_was_meant(spec: dict[str, object], line: str) -> None:
    message = _message({**MINIMAL, **spec})
    assert line in message, message
    assert "allowed: " in message  # and still lists the section's keys


def test_a_key_nothing_resembles_lists_the_allowed_keys_only() -> None:
    message = _message({**MINIMAL, "train": {"zzz": 1}})
    assert message.startswith("train.zzz: unknown key 'zzz'; allowed: amp, augment,"), message


@pytest.mark.parametrize("where", [{"device": "cpu"}, {"resources": {"device": 0}},
                                   {"train": {"device": "0,1"}}])
def test_device_points_at_resources(where: dict[str, object]) -> None:
    message = _message({**MINIMAL, **where})
    assert "unknown key 'device'; trainforge picks the device from resources: " \
           "resources.gpus_per_worker: 0 trains on the CPU (also on a GPU host)" in message


@pytest.mark.parametrize(("section", "value", "hint"), [
    ("model", "yolov8n.pt", 'write model: {base: "yolov8n.pt"}'),
    ("dataset", "/data/shapes/", 'write dataset: {uri: "/data/shapes/"}'),
])
def test_a_section_written_as_a_bare_value_says_how_to_write_it(
    section: str, value: str, hint: str
) -> None:
    assert hint in _message({**MINIMAL, section: value})


def test_the_example_spec_unedited_names_its_placeholder() -> None:
    example = ROOT / "examples" / "shapes-demo.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(example.read_bytes(), source=str(example))
    message = info.value.message
    assert "dataset.uri: Value error, @DATASET_URI@ is a placeholder of an example spec: " \
           "replace it with the dataset's folder" in message
    assert 'dataset: {uri: "file:///abs/path/to/dataset/"}' in message
    assert "trainforge dataset synth DIR" in message and "s3://bucket/prefix/" in message


def test_a_tab_says_yaml_forbids_it_and_where() -> None:
    with pytest.raises(SpecError) as info:
        load_spec("name: x\ndataset: {uri: s3://d/x/}\ntrain:\n\tepochs: 3\n", source="s.yaml")
    assert "s.yaml: not valid YAML/JSON: YAML forbids tabs: indent with spaces" in \
        info.value.message
    assert "line 4, column 1" in info.value.message


def test_states_take_any_case() -> None:
    assert JobState("running") is JobState("Running") is JobState.RUNNING
    with pytest.raises(ValueError, match="'runing' is not a valid JobState"):
        JobState("runing")
