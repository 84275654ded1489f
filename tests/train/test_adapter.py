"""The Ultralytics adapter: spec → trainer arguments, and proof that the trainer used them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.core import adapter, dataset_step
from tests.fixtures.training import make_dataset
from trainforge.spec import Augment, TrainParams

#: Every hyperparameter moved off its default, so a key the adapter dropped would show.
NON_DEFAULT: dict[str, Any] = {
    "epochs": 1, "imgsz": 64, "batch": 8, "patience": 7, "optimizer": "AdamW", "lr0": 0.003,
    "lrf": 0.05, "momentum": 0.9, "weight_decay": 0.0007, "warmup_epochs": 0.5,
    "warmup_momentum": 0.7, "warmup_bias_lr": 0.05, "box": 6.5, "cls": 0.6, "dfl": 1.4,
    "dropout": 0.1, "cos_lr": True, "seed": 7, "deterministic": False, "single_cls": True,
    "rect": True, "fraction": 0.5, "freeze": 2, "cache": "ram", "amp": False, "workers": 1,
    "nbs": 32,
    "augment": {
        "hsv_h": 0.02, "hsv_s": 0.6, "hsv_v": 0.3, "degrees": 5.0, "translate": 0.05,
        "scale": 0.4, "shear": 1.0, "perspective": 0.0001, "flipud": 0.1, "fliplr": 0.4,
        "mosaic": 0.5, "mixup": 0.05, "copy_paste": 0.05, "close_mosaic": 3,
    },
}


def test_every_spec_hyperparameter_is_moved_off_its_default_here() -> None:
    params = TrainParams.model_validate(NON_DEFAULT)
    defaults = {**adapter.spec_hyperparameters(TrainParams())}
    same = [k for k, v in adapter.spec_hyperparameters(params).items() if defaults[k] == v]
    assert same == [], "NON_DEFAULT must change every field, or the args.yaml test proves less"


def test_overrides_hold_known_ultralytics_arguments_only(tmp_path: Path) -> None:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    overrides = adapter.train_overrides(TrainParams(), data_yaml=tmp_path / "data.yaml",
                                        model="yolov8n.yaml", run_dir=tmp_path / "run",
                                        device="cpu")
    unknown = set(overrides) - set(DEFAULT_CFG_DICT) - {"save_dir"}
    assert unknown == set()
    assert set(TrainParams.model_fields) - {"augment"} <= set(overrides)
    assert set(Augment.model_fields) <= set(overrides)
    assert "augment" not in overrides, "the nested section is flattened, never passed as a dict"


def test_device_for_gpu_counts() -> None:
    assert adapter.device_for(0) == "cpu"
    assert adapter.device_for(1) == "0"
    assert adapter.device_for(4) == "0,1,2,3"


def test_mismatches_name_what_the_trainer_changed(tmp_path: Path) -> None:
    train = TrainParams(lr0=0.02)
    args = {**adapter.spec_hyperparameters(train), "lr0": 0.01, "data": "x"}
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(args))
    assert adapter.hyperparameter_mismatches(train, tmp_path) == {"lr0": (0.02, 0.01)}


def test_results_csv_rebuilt_from_checkpoint_columns_reads_like_ultralytics(
        tmp_path: Path) -> None:
    import polars as pl

    columns = {"epoch": [1, 2], "time": [3.5, 7.25], "metrics/mAP50(B)": [0.125, 0.5]}
    adapter.write_results_csv(columns, tmp_path / "results.csv")
    assert pl.read_csv(tmp_path / "results.csv").to_dict(as_series=False) == columns


def test_set_checkpoint_epochs_changes_only_the_total_and_stays_a_safe_checkpoint(
        tmp_path: Path) -> None:
    """A checkpoint as Ultralytics writes it after epoch 2 of 3 (model, optimizer state,
    train_args), built without training: raising its total keeps everything else."""
    adapter.prepare_environment(tmp_path / "ultralytics")
    adapter.harden_loading()
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    args = {"epochs": 3, "lr0": 0.02, "lrf": 0.01, "optimizer": "SGD", "close_mosaic": 1}
    path = tmp_path / "last.pt"
    torch.save({"epoch": 1, "best_fitness": 0.25, "model": None, "ema": model.half(),
                "updates": 8, "optimizer": optimizer.state_dict(), "train_args": args,
                "train_results": {"epoch": [1, 2], "metrics/mAP50(B)": [0.1, 0.2]}}, path)
    before = adapter.read_checkpoint(path)
    assert (before.epoch, before.epochs, before.resumable) == (2, 3, True)

    info = adapter.set_checkpoint_epochs(path, 5)

    assert (info.epoch, info.epochs, info.resumable) == (2, 5, True)
    again = adapter.read_checkpoint(path)  # loaded the safe way: still a plain checkpoint
    assert again == info and again.train_args == {**args, "epochs": 5}
    assert again.results == before.results
    saved = torch.load(path, map_location="cpu")
    assert (saved["best_fitness"], saved["updates"]) == (0.25, 8)
    assert saved["optimizer"]["param_groups"] == optimizer.state_dict()["param_groups"]
    with pytest.raises(ValueError, match="holds 2 epochs; it cannot continue to 1"):
        adapter.set_checkpoint_epochs(path, 1)
    assert adapter.read_checkpoint(path).epochs == 5
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".pt" or "tmp" in p.name] == \
        ["last.pt"]


class _Recorder:
    def __init__(self) -> None:
        self.epochs: list[adapter.EpochResult] = []
        self.checkpoints: list[tuple[int, adapter.CheckpointInfo]] = []

    def on_epoch(self, result: adapter.EpochResult) -> None:
        self.epochs.append(result)

    def on_checkpoint(self, epoch: int, last: Path, best: Path | None) -> None:
        self.checkpoints.append((epoch, adapter.read_checkpoint(last)))


@pytest.mark.slow
def test_trainer_args_yaml_equals_the_spec(tmp_path: Path) -> None:
    adapter.prepare_environment(tmp_path / "ultralytics")
    root = make_dataset(tmp_path / "data", train=16, val=4, test=0)
    data_yaml = dataset_step.write_local_data_yaml(root, tmp_path / "data.yaml")
    train = TrainParams.model_validate(NON_DEFAULT)
    recorder = _Recorder()
    outputs = adapter.train(
        adapter.train_overrides(train, data_yaml=data_yaml, model="yolov8n.yaml",
                                run_dir=tmp_path / "run", device="cpu", plots=False),
        recorder)

    assert outputs.run_dir == tmp_path / "run"
    assert adapter.hyperparameter_mismatches(train, outputs.run_dir) == {}
    assert adapter.read_effective_hyperparameters(outputs.run_dir) == \
        adapter.spec_hyperparameters(train)
    # The callbacks saw the one epoch and its checkpoint, with Ultralytics' metric names.
    assert [r.epoch for r in recorder.epochs] == [1]
    metrics = recorder.epochs[0].metrics
    for name in ("train/box_loss", "metrics/precision(B)", "metrics/recall(B)",
                 "metrics/mAP50(B)", "metrics/mAP50-95(B)", "lr/pg0", "epoch_seconds",
                 "images_per_second"):
        assert name in metrics, name
    # The checkpoint handed over after the epoch is resumable and knows its progress.
    [(epoch, info)] = recorder.checkpoints
    assert (epoch, info.epoch, info.epochs, info.resumable) == (1, 1, 1, True)
    assert info.results["epoch"] == [1]
