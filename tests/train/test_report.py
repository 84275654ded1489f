"""report.json says which split it scored, and warns when it had to fall back to val."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobs.core.adapter import Evaluation
from jobs.export.publish import manifest_metadata
from jobs.train.report import build_report
from trainforge.spec import parse_spec


def _evaluation(split: str) -> Evaluation:
    return Evaluation(
        split=split,
        metrics={"precision": 0.5, "recall": 0.4, "mAP50": 0.3, "mAP50-95": 0.2},
        per_class=[{"class_id": 0, "name": "a", "images": 2, "instances": 3, "precision": 0.5,
                    "recall": 0.4, "AP50": 0.3, "AP50-95": 0.2}],
        confusion_matrix={"labels": ["a", "background"], "rows": "predicted",
                          "columns": "true", "matrix": [[2, 1], [1, 0]]},
        speed_ms={"inference": 1.0},
        plots=[Path("/x/confusion_matrix.png")],
    )


def _report(split: str, tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "results.csv").write_text("epoch,time,metrics/mAP50(B)\n1,2.5,0.1\n2,5,0.3\n")
    spec = parse_spec({"name": "m", "dataset": {"uri": "s3://b/d/"},
                       "train": {"imgsz": 320, "epochs": 2}})
    return build_report(spec=spec, job_id="j1", evaluation=_evaluation(split),
                        class_names=["a"], dataset_fingerprint="f" * 32,
                        results_csv=tmp_path / "results.csv", hyperparameters={"lr0": 0.01},
                        resumed_at=None)


def test_test_split_report(tmp_path: Path) -> None:
    report = _report("test", tmp_path)
    assert report["evaluation"]["split"] == "test"
    assert report["dataset"]["has_test_split"] is True
    assert report["input_shape"] == [1, 3, 320, 320]
    assert report["training"]["epochs_completed"] == 2
    assert report["training"]["last_epoch"]["metrics/mAP50(B)"] == 0.3
    assert report["evaluation"]["plots"] == ["confusion_matrix.png"]


def test_without_a_test_split_the_report_says_val_was_used(tmp_path: Path) -> None:
    report = _report("val", tmp_path)
    assert report["evaluation"]["split"] == "val"
    assert "no test split" in report["evaluation"]["note"]
    assert report["dataset"]["has_test_split"] is False
    # The model manifest carries the same warning.
    assert "no test split" in manifest_metadata(report)["evaluation"]["note"]
