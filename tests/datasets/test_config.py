"""load_data_yaml / write_local_data_yaml: the contract the training job codes against."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from trainforge.datasets import DataConfig, load_data_yaml, validate, write_local_data_yaml
from trainforge.errors import DatasetError, DatasetNotFound


def _write(root: Path, doc: dict[str, object]) -> None:
    (root / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def test_load_synth_dataset(dataset: Path) -> None:
    cfg = load_data_yaml(dataset)
    assert isinstance(cfg, DataConfig)
    assert cfg.names == ["square", "circle"] and cfg.nc == 2
    assert cfg.splits == {"train": dataset / "train/images", "val": dataset / "val/images",
                          "test": dataset / "test/images"}
    assert all(p.is_absolute() for p in cfg.splits.values())


@pytest.mark.parametrize("names", [["square", "circle"], {0: "square", 1: "circle"},
                                   {"0": "square", "1": "circle"}])
def test_names_as_list_or_mapping(dataset: Path, names: object) -> None:
    _write(dataset, {"train": "train/images", "val": "val/images", "names": names})
    cfg = load_data_yaml(dataset)
    assert cfg.names == ["square", "circle"]
    assert set(cfg.splits) == {"train", "val"}


def test_absolute_laptop_path_is_ignored_with_a_warning(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(dataset, {"path": "/home/user/projects/ppe-detector/data/dataset",
                     "train": "train/images", "val": "val/images", "nc": 2,
                     "names": {0: "square", 1: "circle"}})
    with caplog.at_level(logging.WARNING):
        cfg = load_data_yaml(dataset)
    assert cfg.splits["train"] == dataset / "train/images"
    assert "data_yaml_path_ignored" in caplog.text


def test_relative_path_inside_the_root_is_a_base(dataset: Path) -> None:
    (dataset / "inner").mkdir()
    for split in ("train", "val", "test"):
        (dataset / split).rename(dataset / "inner" / split)
    _write(dataset, {"path": "inner", "train": "train/images", "val": "./val/images/",
                     "names": ["square", "circle"]})
    cfg = load_data_yaml(dataset)
    assert cfg.splits == {"train": dataset / "inner/train/images",
                          "val": dataset / "inner/val/images"}
    assert validate(dataset).ok


def test_a_stock_ultralytics_data_yaml_validates_with_warnings(
    dataset: Path, tmp_path: Path
) -> None:
    # As Ultralytics ships them (coco8.yaml): path: relative to its own datasets folder, and a
    # download: key (a URL, or a script Ultralytics would run).
    (dataset / "data.yaml").write_text(
        "path: ../datasets/shapes # dataset root dir\n"
        "train: train/images\nval: val/images\ntest: test/images\n"
        "names:\n  0: square\n  1: circle\n"
        "download: https://github.com/ultralytics/assets/releases/download/v0.0.0/shapes.zip\n")
    report = validate(dataset)
    assert report.ok, report.format_text()
    warnings = {p.code: p for p in report.warnings}
    assert set(warnings) == {"data_yaml_path_ignored", "data_yaml_download_ignored"}
    assert warnings["data_yaml_path_ignored"].line == 1
    assert "'../datasets/shapes' is ignored (it leaves the dataset root)" in \
        warnings["data_yaml_path_ignored"].message
    assert warnings["data_yaml_download_ignored"].message.startswith(
        "download: is ignored and never run")
    written = yaml.safe_load(write_local_data_yaml(dataset, tmp_path / "data.yaml").read_text())
    assert written["path"] == str(dataset.resolve()) and "download" not in written


def test_errors_list_every_problem_with_its_line(dataset: Path) -> None:
    _write(dataset, {"train": "../outside", "val": "val/images", "nc": 3,
                     "names": ["square", "circle"]})
    with pytest.raises(DatasetError) as info:
        load_data_yaml(dataset)
    message = str(info.value)
    assert "data.yaml:1 [split_path_invalid]" in message
    assert "data.yaml:3 [data_yaml_nc_mismatch]" in message
    assert info.value.code == "dataset_invalid"


def test_missing_root_and_missing_yaml(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound):
        load_data_yaml(tmp_path / "nope")
    with pytest.raises(DatasetError, match="data_yaml_missing"):
        load_data_yaml(tmp_path)


def test_dataset_yaml_name_from_the_tutorial_is_found(dataset: Path) -> None:
    (dataset / "data.yaml").rename(dataset / "dataset.yaml")
    assert load_data_yaml(dataset).yaml_file == "dataset.yaml"


def test_split_symlink_leaving_the_root_is_refused(dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-val"
    (dataset / "val").rename(outside)
    (dataset / "val").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DatasetError, match="symlink_escape"):
        load_data_yaml(dataset)


def test_write_local_data_yaml(dataset: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load((dataset / "data.yaml").read_text())
    doc["path"] = "/Users/someone/ppe"
    (dataset / "data.yaml").write_text(yaml.safe_dump(doc))
    dest = write_local_data_yaml(dataset, tmp_path / "run" / "data.yaml")
    assert dest == tmp_path / "run" / "data.yaml"
    written = yaml.safe_load(dest.read_text())
    assert written == {"path": str(dataset.resolve()), "train": "train/images",
                       "val": "val/images", "test": "test/images", "nc": 2,
                       "names": {0: "square", 1: "circle"}}
    assert "download" not in dest.read_text()


def test_ultralytics_accepts_the_written_data_yaml(dataset: Path, tmp_path: Path) -> None:
    """The training adapter hands this file to Ultralytics: it must resolve every split."""
    check_det_dataset = pytest.importorskip(
        "ultralytics.data.utils", reason="ultralytics is in the train extra").check_det_dataset
    dest = write_local_data_yaml(dataset, tmp_path / "data.yaml")
    data = check_det_dataset(str(dest), autodownload=False)
    assert data["nc"] == 2 and data["names"] == {0: "square", 1: "circle"}
    assert Path(data["train"]) == dataset.resolve() / "train/images"
    assert Path(data["val"]) == dataset.resolve() / "val/images"
