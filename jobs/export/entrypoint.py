"""``python -m jobs.export --spec URI``: export, gate and publish a trained detector.

The job runs in the same skeleton as training (jobs/core/runtime.py): the spec is checked
against the checksum the API recorded and the team's access rules before anything is read,
SIGTERM cancels it (exit 143) with its log shipped, the dataset is synced into the team's cache
and strictly validated, and the base weights are loaded the safe way. Then
:func:`~jobs.export.pipeline.export_and_publish` converts, gates and publishes.

Exit status 0 when the version is published and every requested format passed (formats
skipped for want of a GPU do not count against it); 1 otherwise, after a FAILED state event
that names the reason and an error code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from jobs.core import runtime
from jobs.core.runtime import JobContext
from jobs.core.steps import step
from jobs.export import metrics
from jobs.export.pipeline import export_and_publish
from trainforge.constants import ENV_YOLO_AUTOINSTALL
from trainforge.errors import ExportGateFailed, TrainforgeError
from trainforge.reporting import JobReporter
from trainforge.spec import JobKind, JobSpec


def main(argv: list[str] | None = None) -> int:
    """Run one export job; returns the process exit status."""
    # A missing TensorRT or onnxruntime-gpu must be reported, not pip-installed mid-job.
    os.environ.setdefault(ENV_YOLO_AUTOINSTALL, "false")
    return runtime.main(argv, run=run_export, prog="python -m jobs.export", description=__doc__)


def run_export(ctx: JobContext, reporter: JobReporter) -> str:
    """The export job's steps; returns what was published (the manifest's URI and summary).

    Raises:
        ExportGateFailed: published, but a requested format lost too much accuracy.
        TrainforgeError: another step failed (metrics of the failure are pushed first).
    """
    started = time.perf_counter()
    spec: JobSpec | None = None
    try:
        prepared = runtime.prepare_job(ctx, reporter, JobKind.EXPORT)
        spec = prepared.spec
    except TrainforgeError:
        _push_failure(spec or _spec_name(ctx), started)
        raise
    with step("export") as out:
        outcome = export_and_publish(
            spec, job_id=ctx.job_id, weights=Path(prepared.weights),
            data_yaml=prepared.data_yaml, workdir=ctx.work_dir / "export",
            models_uri=ctx.models_uri,
            metadata={"dataset_fingerprint": prepared.synced.fingerprint},
            reporter=reporter,
        )
        out.text = outcome.summary()
    where = outcome.published.manifest_uri if outcome.published else "nowhere"
    if outcome.failed:
        raise ExportGateFailed(f"published {outcome.model}@{outcome.version} ({where}) without "
                               f"{', '.join(outcome.failed)}: {outcome.summary()}")
    return f"{where}: {outcome.summary()}"


def _spec_name(ctx: JobContext) -> str | None:
    """The model name of a spec that failed before it was prepared (for the failure metric)."""
    try:
        return runtime.read_spec(ctx.spec_uri, JobKind.EXPORT).name
    except TrainforgeError:
        return None


def _push_failure(spec: JobSpec | str | None, started: float) -> None:
    # The pipeline pushes its own metrics; before it, a failure still records its duration.
    name = spec.name if isinstance(spec, JobSpec) else spec
    if name is None:
        return
    metrics.push(metrics.ExportMetrics(model=name, duration_s=time.perf_counter() - started,
                                       succeeded=False, finished_at=time.time()))
