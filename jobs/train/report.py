"""report.json: what a finished training job measured, as numbers a program can read."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.core.adapter import Evaluation
from trainforge.spec import JobSpec

REPORT_SCHEMA_VERSION = 1


def build_report(
    *,
    spec: JobSpec,
    job_id: str,
    evaluation: Evaluation,
    class_names: list[str],
    dataset_fingerprint: str,
    results_csv: Path,
    hyperparameters: dict[str, Any],
    resumed_at: int | None,
) -> dict[str, Any]:
    """Assemble report.json.

    Args:
        spec: the job spec.
        job_id: the job (and model version) id.
        evaluation: best.pt scored on the test split (or val when there is none).
        class_names: in class-id order.
        dataset_fingerprint: the dataset version trained on.
        results_csv: Ultralytics' per-epoch results.
        hyperparameters: what the trainer used (its args.yaml).
        resumed_at: the epoch a restarted run continued at, if any.

    Returns:
        A JSON-ready mapping.
    """
    epochs = _read_results(results_csv)
    fallback = evaluation.split != "test"
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "job_id": job_id,
        "model_name": spec.name,
        "created_at": datetime.now(UTC).isoformat(),
        "evaluation": {
            **evaluation.to_dict(),
            "weights": "best.pt",
            "note": ("the dataset has no test split: these are val-split scores, and val also "
                     "chose best.pt, so they are optimistic" if fallback else
                     "held-out test split, never used for training or for choosing best.pt"),
        },
        "dataset": {
            "uri": spec.dataset.uri,
            "fingerprint": dataset_fingerprint,
            "class_names": class_names,
            "has_test_split": not fallback,
        },
        "input_shape": [1, 3, spec.train.imgsz, spec.train.imgsz],
        "training": {
            "base": spec.model.base,
            "epochs_requested": spec.train.epochs,
            "epochs_completed": len(epochs),
            "resumed_at_epoch": resumed_at,
            # train.batch is the global batch, split evenly across the data-parallel workers.
            "workers": spec.resources.workers,
            "batch_per_worker": spec.train.batch // spec.resources.workers,
            "last_epoch": epochs[-1] if epochs else {},
            "hyperparameters": hyperparameters,
        },
    }


def _read_results(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    return [{k.strip(): float(v) for k, v in row.items() if k and v not in (None, "")}
            for row in rows]
