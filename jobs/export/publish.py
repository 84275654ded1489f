"""The end of a training job: the trained model becomes a registry version."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from jobs.core.artifacts import JobArtifacts
from trainforge.errors import ExportGateFailed, TrainingFailed
from trainforge.registry import Published, publish
from trainforge.reporting import JobReporter
from trainforge.spec import JobSpec

log = logging.getLogger(__name__)

#: What a training job publishes (the export job adds model.onnx / engines to the same version).
PUBLISHED_FILES = ("best.pt", "last.pt", "report.json", "results.csv")


def publish_result(
    spec: JobSpec,
    job_id: str,
    artifacts: JobArtifacts,
    models_uri: str,
    work_dir: Path,
    *,
    data_yaml: Path | None = None,
    reporter: JobReporter | None = None,
) -> Published:
    """Publish ``jobs/<id>/train/{best.pt,last.pt,report.json,results.csv}`` as
    ``<models>/<spec.name>/<job_id>/`` with a manifest written last.

    The manifest carries the test-split evaluation, the dataset fingerprint, the class names,
    the input shape and the source job, so a reader needs nothing else to use or compare it.
    When the spec has an ``export`` section, the export chain runs here, in the same process
    and on the same local dataset: every requested format is converted and gated against
    best.pt, and the version is published with the formats that passed.

    Args:
        spec: the job spec (``name`` is the model name).
        job_id: the job id, which is also the version.
        artifacts: the job's artifacts.
        models_uri: root of the models bucket.
        work_dir: a local scratch directory (removed afterwards).
        data_yaml: the local data.yaml (needed when the spec has an ``export`` section).
        reporter: where the export chain reports its progress.

    Returns:
        The manifest's URI and content (``created`` is False when a rerun found it there).

    Raises:
        TrainingFailed: the run's outputs are not in the artifacts store.
        ExportGateFailed: a requested export format lost too much accuracy.
    """
    local = work_dir / "publish"
    shutil.rmtree(local, ignore_errors=True)
    files: dict[str, Path] = {}
    for name in PUBLISHED_FILES:
        dest = local / name
        if not artifacts.download(artifacts.train_output(name), dest):
            raise TrainingFailed(f"{artifacts.uri(artifacts.train_output(name))} is missing; "
                                 "the training run did not finish its uploads")
        files[name] = dest
    report = json.loads(files["report.json"].read_text())
    try:
        if spec.export is None:
            return publish(models_uri, spec.name, job_id, files, manifest_metadata(report))
        return _export_and_publish(spec, job_id, files, report, models_uri, local,
                                   data_yaml, reporter)
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _export_and_publish(spec: JobSpec, job_id: str, files: dict[str, Path],
                        report: dict[str, Any], models_uri: str, local: Path,
                        data_yaml: Path | None, reporter: JobReporter | None) -> Published:
    from jobs.export.pipeline import export_and_publish

    if data_yaml is None:
        raise TrainingFailed("the export chain needs the job's local data.yaml")
    extra = {name: path for name, path in files.items() if name != "best.pt"}
    outcome = export_and_publish(
        spec, job_id=job_id, weights=files["best.pt"], data_yaml=data_yaml,
        workdir=local / "export", models_uri=models_uri, extra_files=extra,
        metadata=manifest_metadata(report), reporter=reporter,
    )
    if outcome.published is None:
        raise ExportGateFailed(f"nothing was published for {spec.name}@{job_id}: "
                               f"{outcome.summary()}")
    if outcome.failed:
        # The version is out (best.pt and the formats that passed), but a requested format
        # lost accuracy: the job fails loudly instead of shipping a silent regression.
        raise ExportGateFailed(
            f"published {spec.name}@{job_id} without {', '.join(outcome.failed)}: "
            f"{outcome.summary()}")
    return outcome.published


def manifest_metadata(report: dict[str, Any]) -> dict[str, Any]:
    """Manifest fields taken from report.json."""
    evaluation = report["evaluation"]
    return {
        "source_job_id": report["job_id"],
        "metrics": evaluation["metrics"],
        "evaluation": {k: evaluation[k] for k in ("split", "metrics", "per_class", "note")},
        "dataset": {k: report["dataset"][k] for k in ("uri", "fingerprint")},
        "class_names": report["dataset"]["class_names"],
        "input_shape": report["input_shape"],
        "base": report["training"]["base"],
    }
