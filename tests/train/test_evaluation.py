"""The held-out evaluation (jobs/core/adapter/evaluation.py) with and without plots: the same
numbers either way, the confusion matrix included (Ultralytics fills it only while plots are
on), and no picture drawn when a spec says ``train.plots: false``."""

from __future__ import annotations

from pathlib import Path

from jobs.core import adapter
from tests.fixtures.checkpoints import PROMOTION_DATASET


def test_an_undrawn_evaluation_scores_like_a_drawn_one(promotion_checkpoints: dict[str, Path],
                                                       tmp_path: Path) -> None:
    settings = adapter.EvalSettings(promotion_checkpoints["data_yaml"], "test",
                                    PROMOTION_DATASET["imgsz"], 16, "cpu")
    weights = promotion_checkpoints["final"]
    drawn = adapter.evaluate(weights, settings, tmp_path / "drawn", plots=True)
    undrawn = adapter.evaluate(weights, settings, tmp_path / "undrawn", plots=False)

    assert undrawn.metrics == drawn.metrics and undrawn.metrics["mAP50-95"] > 0
    assert undrawn.per_class == drawn.per_class
    assert undrawn.confusion_matrix == drawn.confusion_matrix
    labels = promotion_checkpoints["dataset"] / "test" / "labels"
    boxes = sum(len(f.read_text().splitlines()) for f in labels.glob("*.txt"))
    columns = list(zip(*undrawn.confusion_matrix["matrix"], strict=True))[:-1]
    assert sum(map(sum, columns)) == boxes, "every test box is counted: matched or missed"

    assert {p.name for p in drawn.plots} >= {"confusion_matrix.png", "BoxPR_curve.png"}
    assert undrawn.plots == []
    assert not list((tmp_path / "undrawn").rglob("*.png")) and \
        not list((tmp_path / "undrawn").rglob("*.jpg")), "nothing drawn"
