"""The promote step on real models: both versions evaluated on the same held-out split, and
the alias moves only when every rule holds.

One small detector is trained once (three shape classes, 96 px, CPU, one to two minutes:
``promotion_checkpoints`` in tests/fixtures/checkpoints.py), and its checkpoints make the
versions:

* ``early``: an early epoch, weak on every class;
* ``final``: the last epoch, clearly better;
* ``blind``: ``final`` with one class's logits pushed to -50, so it never reports that class:
  better than ``early`` overall, but that class regresses (the class is chosen by measuring
  both checkpoints: the one ``early`` scores best of those ``final`` can lose and still win);
* ``again``: ``early`` published once more, a worse challenger to ``final``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobs.core.artifacts import JobArtifacts
from jobs.train.promote import evaluate_pair, promote_version
from tests.fixtures.checkpoints import PROMOTION_DATASET
from trainforge import aliases, lifecycle
from trainforge.registry import publish
from trainforge.reporting import JobReporter
from trainforge.spec import parse_spec

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def checkpoints(promotion_checkpoints: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``early``, ``final`` and ``blind`` checkpoints, the dataset root as ``dataset``, and
    ``blind_class``, the class ``blind`` never reports."""
    work = tmp_path_factory.mktemp("promote-models")
    blind_class = _class_to_blind(promotion_checkpoints, work)
    blind = _blind(promotion_checkpoints["final"], work / "blind.pt", blind_class)
    return {**promotion_checkpoints, "blind": blind, "blind_class": blind_class}


def _class_to_blind(checkpoints: dict[str, Any], work: Path) -> int:
    """The class whose blinding makes the sharpest case: the early model scores it best of
    the classes the final model can lose and still beat the early one overall.

    Chosen by measurement rather than fixed: which class a 14-epoch CPU run learns by epoch 8
    depends on the machine's floating-point kernels, and a fixed class once scored 0.003.
    """
    models = f"file://{work}/scores"
    _publish(models, "early", checkpoints["early"])
    _publish(models, "final", checkpoints["final"])
    comparison = evaluate_pair("shapes", ("final", "early"), models_uri=models,
                               data_yaml=checkpoints["data_yaml"],
                               imgsz=PROMOTION_DATASET["imgsz"], batch=16, work_dir=work)
    rows = comparison["per_class"]
    final = [row["challenger"]["AP50-95"] for row in rows]
    early_mean = comparison["champion"]["metrics"]["mAP50-95"]
    candidates = [(row["champion"]["AP50-95"], row["class_id"]) for row in rows
                  if row["champion"]["AP50-95"] > 0.05
                  and (sum(final) - final[row["class_id"]]) / len(rows) > early_mean + 0.01]
    assert candidates, f"no class to blind: the final model is not clearly better: {comparison}"
    return max(candidates)[1]


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
        "train": {"imgsz": PROMOTION_DATASET["imgsz"], "batch": 16, "epochs": 1},
        "promote": {"max_class_ap50_95_drop": 0.02, **policy},
    })


def _publish(models: str, version: str, weights: Path) -> None:
    publish(models, "shapes", version, {"best.pt": weights},
            {"dataset": {"fingerprint": "f" * 64}})


def _promote(tmp_path: Path, models: str, checkpoints: dict[str, Any], version: str,
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
                                             checkpoints: dict[str, Any]) -> None:
    models = f"file://{tmp_path}/models/dev"

    # The first version takes the alias: nothing to beat.
    _publish(models, "v1-early", checkpoints["early"])
    first, _, _ = _promote(tmp_path, models, checkpoints, "v1-early")
    assert first.outcome == "promoted", first.summary
    assert "the model's first version" in first.summary

    # Better overall, but blind to one class: refused, naming the class.
    _publish(models, "v2-blind", checkpoints["blind"])
    blind, reporter, artifacts = _promote(tmp_path, models, checkpoints, "v2-blind")
    comparison = blind.record["comparison"]
    assert comparison["deltas"]["mAP50-95"] > 0, (
        f"precondition: the blind final model must beat the early one overall: {comparison}")
    blind_class = checkpoints["blind_class"]
    assert _ap(blind, "champion", blind_class) > 0.02, (
        f"precondition: the early model must score class {blind_class}: {comparison}")
    assert _ap(blind, "challenger", blind_class) == 0.0
    assert blind.outcome == "kept", blind.summary
    class_name = comparison["per_class"][blind_class]["name"]
    assert blind.summary.startswith(f"kept v1-early: class {class_name!r} dropped")
    assert aliases.current(models, "shapes", "champion").version == "v1-early"
    # The verdict is in the events, the job's report.json, comparison.json and the registry.
    assert [e.data.get("promotion") for e in reporter.sent] == ["kept"]
    report = json.loads(artifacts.store.get(artifacts.key(artifacts.train_output(
        "report.json"))))
    assert report["promotion"]["outcome"] == "kept"
    assert report["promotion"]["verdict"]["rules"][1]["rule"] == "max_class_ap50_95_drop"
    saved = json.loads(artifacts.store.get(artifacts.key("jobs/v2-blind/promote/comparison.json")))
    assert saved["settings"]["split"] == "test" and saved["settings"]["imgsz"] == \
        PROMOTION_DATASET["imgsz"]
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
