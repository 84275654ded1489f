"""The promote step on real models: both versions evaluated on the same held-out split, and
the alias moves only when every rule holds.

One small detector is trained once (three shape classes, 96 px, CPU, one to two minutes;
cached between runs like tests/export's), and its checkpoints make the versions:

* ``early``: an early epoch, weak on every class;
* ``final``: the last epoch, clearly better;
* ``blind``: ``final`` with its class-2 logits pushed to -50, so it never reports that class:
  better than ``early`` overall, but class 2 regresses;
* ``again``: ``early`` published once more, a worse challenger to ``final``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from jobs.core.artifacts import JobArtifacts
from jobs.train.promote import promote_version
from trainforge import aliases, lifecycle
from trainforge.registry import publish
from trainforge.reporting import JobReporter
from trainforge.spec import parse_spec

pytestmark = pytest.mark.slow

DATASET = {"classes": 3, "train": 160, "val": 16, "test": 24, "imgsz": 96, "seed": 3}
TRAIN = {"epochs": 14, "batch": 16, "imgsz": 96, "mosaic": 0.0, "warmup_epochs": 0,
         "optimizer": "SGD", "lr0": 0.02, "seed": 0, "deterministic": True, "save_period": 1}
#: Ultralytics numbers saved epochs from 0: epoch8.pt is the 9th (test mAP50-95 about 0.13,
#: every class above 0.05, against about 0.31 for the last epoch).
EARLY_EPOCH = 8
BLIND_CLASS = 2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory,
                request: pytest.FixtureRequest) -> dict[str, Path]:
    """``early``, ``final`` and ``blind`` checkpoints, and the dataset root as ``dataset``."""
    import torch
    import ultralytics

    from trainforge.datasets import synth, write_local_data_yaml

    work = tmp_path_factory.mktemp("promote-models")
    dataset = synth(work / "shapes", **DATASET)
    data_yaml = write_local_data_yaml(dataset, work / "data.yaml")
    recipe = json.dumps([DATASET, TRAIN, EARLY_EPOCH, ultralytics.__version__,
                         torch.__version__])
    cache = request.config.cache.mkdir(
        "trainforge-promote-" + hashlib.sha256(recipe.encode()).hexdigest()[:16])
    if not (cache / "final.pt").is_file():
        from ultralytics.models.yolo.model import YOLO

        YOLO("yolov8n.yaml").train(
            data=str(data_yaml), device="cpu", workers=0, plots=False, val=False, amp=False,
            project=str(work / "runs"), name="train", exist_ok=True, verbose=False, **TRAIN)
        weights = work / "runs" / "train" / "weights"
        shutil.copyfile(weights / f"epoch{EARLY_EPOCH}.pt", cache / "early.pt")
        shutil.copyfile(weights / "last.pt", cache / "final.pt")
    out = {name: work / f"{name}.pt" for name in ("early", "final")}
    for name, path in out.items():
        shutil.copyfile(cache / f"{name}.pt", path)
    out["blind"] = _blind(out["final"], work / "blind.pt", BLIND_CLASS)
    out["dataset"] = dataset
    out["data_yaml"] = data_yaml
    return out


def _blind(source: Path, dest: Path, cls: int) -> Path:
    """A copy of ``source`` whose detection head never scores class ``cls``."""
    import torch

    checkpoint = torch.load(source, map_location="cpu", weights_only=False)  # our own file
    for key in ("model", "ema"):
        model = checkpoint.get(key)
        if model is None:
            continue
        for branch in model.model[-1].cv3:  # per-scale class-logit convolutions
            branch[-1].bias.data[cls] = -50.0
    torch.save(checkpoint, dest)
    return dest


def _spec(dataset: Path, **policy: Any) -> Any:
    return parse_spec({
        "name": "shapes", "dataset": {"uri": f"file://{dataset}/"},
        "model": {"base": "yolov8n.yaml"},
        "train": {"imgsz": DATASET["imgsz"], "batch": 16, "epochs": 1},
        "promote": {"max_class_ap50_95_drop": 0.02, **policy},
    })


def _publish(models: str, version: str, weights: Path) -> None:
    publish(models, "shapes", version, {"best.pt": weights},
            {"dataset": {"fingerprint": "f" * 64}})


def _promote(tmp_path: Path, models: str, checkpoints: dict[str, Path], version: str,
             **policy: Any) -> tuple[Any, JobReporter, JobArtifacts]:
    artifacts = JobArtifacts(f"file://{tmp_path}/artifacts", version)
    artifacts.put_json(artifacts.train_output("report.json"), {"job_id": version})
    reporter = JobReporter(None, None, None)
    decision = promote_version(
        _spec(checkpoints["dataset"], **policy), version, models_uri=models,
        data_yaml=checkpoints["data_yaml"], work_dir=tmp_path / "work" / version,
        artifacts=artifacts, reporter=reporter, dataset_fingerprint="f" * 64)
    return decision, reporter, artifacts


def _ap(decision: Any, role: str, cls: int) -> float:
    row = decision.record["comparison"]["per_class"][cls]
    return float(row[role]["AP50-95"])


def test_the_alias_moves_only_for_a_fair_win(tmp_path: Path,
                                             checkpoints: dict[str, Path]) -> None:
    models = f"file://{tmp_path}/models/dev"

    # The first version takes the alias: nothing to beat.
    _publish(models, "v1-early", checkpoints["early"])
    first, _, _ = _promote(tmp_path, models, checkpoints, "v1-early")
    assert first.outcome == "promoted", first.summary
    assert "the model's first version" in first.summary

    # Better overall, but blind to class 2: refused, naming the class.
    _publish(models, "v2-blind", checkpoints["blind"])
    blind, reporter, artifacts = _promote(tmp_path, models, checkpoints, "v2-blind")
    comparison = blind.record["comparison"]
    assert comparison["deltas"]["mAP50-95"] > 0, (
        f"precondition: the blind final model must beat the early one overall: {comparison}")
    assert _ap(blind, "champion", BLIND_CLASS) > 0.02, (
        f"precondition: the early model must score class {BLIND_CLASS}: {comparison}")
    assert _ap(blind, "challenger", BLIND_CLASS) == 0.0
    assert blind.outcome == "kept", blind.summary
    class_name = comparison["per_class"][BLIND_CLASS]["name"]
    assert blind.summary.startswith(f"kept v1-early: class {class_name!r} dropped")
    assert aliases.current(models, "shapes", "champion").version == "v1-early"
    # The verdict is in the events, the job's report.json, comparison.json and the registry.
    assert [e.data.get("promotion") for e in reporter.sent] == ["kept"]
    report = json.loads(artifacts.store.get(artifacts.key(artifacts.train_output(
        "report.json"))))
    assert report["promotion"]["outcome"] == "kept"
    assert report["promotion"]["verdict"]["rules"][1]["rule"] == "max_class_ap50_95_drop"
    saved = json.loads(artifacts.store.get(artifacts.key("jobs/v2-blind/promote/comparison.json")))
    assert saved["settings"]["split"] == "test" and saved["settings"]["imgsz"] == DATASET["imgsz"]
    assert saved["verdict"]["promote"] is False

    # Clearly better on every class: promoted, with the figures in the alias's history.
    _publish(models, "v3-final", checkpoints["final"])
    better, _, _ = _promote(tmp_path, models, checkpoints, "v3-final")
    assert better.outcome == "promoted", better.summary
    assert better.summary.startswith("promoted v1-early → v3-final (+")
    head = aliases.current(models, "shapes", "champion")
    assert (head.version, head.previous, head.actor) == ("v3-final", "v1-early", "job v3-final")
    assert head.details["deltas"]["mAP50-95"] > 0

    # A worse challenger (the early weights again) is kept out.
    _publish(models, "v4-again", checkpoints["early"])
    worse, _, _ = _promote(tmp_path, models, checkpoints, "v4-again")
    assert worse.outcome == "kept", worse.summary
    assert worse.summary.startswith("kept v3-final: mAP50-95 -")
    assert aliases.current(models, "shapes", "champion").version == "v3-final"

    # A rerun of a job that already decided changes nothing and evaluates nothing.
    again, _, _ = _promote(tmp_path, models, checkpoints, "v4-again")
    assert again.record == worse.record

    # trainforge models show: each version's verdict and the alias.
    overview = lifecycle.overview(models, "shapes")
    verdicts = {row["version"]: (row["promotion"] or {}).get("outcome")
                for row in overview["versions"]}
    assert verdicts == {"v1-early": "promoted", "v2-blind": "kept", "v3-final": "promoted",
                        "v4-again": "kept"}
    assert overview["aliases"]["champion"]["version"] == "v3-final"
