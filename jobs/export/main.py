"""The export job's entrypoint: spec → weights + dataset → :func:`export_and_publish`.

Exit status 0 when the version is published and every requested format passed (formats
skipped for want of a GPU do not count against it); 1 otherwise, after a FAILED state event
that names the reason and an error code.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from jobs.export import metrics
from jobs.export.dataset import local_copy, prepare
from jobs.export.pipeline import ExportOutcome, export_and_publish
from jobs.train import adapter
from jobs.train.entrypoint import check_access, context_from_env
from trainforge.constants import (
    ENV_ATTEMPT,
    ENV_JOB_ID,
    ENV_YOLO_AUTOINSTALL,
)
from trainforge.errors import ExportGateFailed, SpecError, SpecTampered, TrainforgeError
from trainforge.joblog import ship_log
from trainforge.layout import attempt_log_key
from trainforge.private import restrict_umask
from trainforge.reporting import JobReporter
from trainforge.settings import CommonSettings, get_common_settings
from trainforge.spec import JobKind, JobSpec, load_spec
from trainforge.storage import join_key, open_location
from trainforge.weights import resolve_weights

log = logging.getLogger("jobs.export")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one export job; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m jobs.export",
                                     description="Export, gate and publish a trained detector.")
    parser.add_argument("--spec", required=True, help="job spec URI (s3://, file:// or a path)")
    parser.add_argument("--job-id", help=f"the version to publish (default: ${ENV_JOB_ID})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per event post is noise
    # A missing TensorRT or onnxruntime-gpu must be reported, not pip-installed mid-job.
    os.environ.setdefault(ENV_YOLO_AUTOINSTALL, "false")
    restrict_umask()  # what the job writes (weights, dataset copies, engines) is owner-only
    settings = get_common_settings()
    job_id = args.job_id or os.environ.get(ENV_JOB_ID)
    if not job_id:
        job_id = "local-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        log.warning("no %s set; publishing as version %s", ENV_JOB_ID, job_id)
    attempt = int(os.environ.get(ENV_ATTEMPT) or 1)
    store, base = open_location(settings.resolved_artifacts_uri + "/")
    with ship_log(store, join_key(base, attempt_log_key(job_id, attempt))):
        return run(args.spec, job_id, settings, JobReporter.from_env())


def read_spec(uri: str, *, expected_sha256: str | None = None) -> JobSpec:
    """Load an export spec from a URI (and, when given, check its sha256).

    Raises:
        SpecTampered: its sha256 is not ``expected_sha256`` (the one the API recorded).
        SpecError: the spec does not validate or is not of kind ``export``.
        StorageError: it cannot be read.
    """
    store, key = open_location(uri)
    body = store.get(key)
    if expected_sha256 and hashlib.sha256(body).hexdigest() != expected_sha256:
        raise SpecTampered(f"{uri} is not the spec the API accepted (sha256 differs from "
                           f"{expected_sha256[:12]}…); refusing to run it")
    spec = load_spec(body, source=uri)
    if spec.kind is not JobKind.EXPORT:
        raise SpecError(f"{uri}: jobs.export runs kind 'export' specs, got kind {spec.kind!s}; "
                        "submit it as kind: export or to the matching job")
    return spec


def run(spec_uri: str, job_id: str, settings: CommonSettings, reporter: JobReporter) -> int:
    """Everything after logging is set up; returns the exit status.

    The job's team, access rules and spec checksum come from the dispatcher exactly as for a
    training job (:func:`jobs.train.entrypoint.context_from_env`): the spec is checked against
    them before anything is read, the weights come from the team's registry, and the dataset
    is cached in the team's own cache.
    """
    started = time.perf_counter()
    spec: JobSpec | None = None
    entered_pipeline = False
    ctx = context_from_env(spec_uri, settings)
    try:
        spec = read_spec(spec_uri, expected_sha256=ctx.spec_sha256)
        log.info("access: %s", check_access(ctx, spec))
        reporter.state("RUNNING", "exporting")
        # Before anything loads weights or labels (see jobs/train/adapter.py).
        adapter.harden_loading()
        with tempfile.TemporaryDirectory(prefix="trainforge-export-") as tmp:
            work = Path(tmp)
            models_uri = ctx.models_uri
            weights = Path(resolve_weights(spec.model.base, work / "weights",
                                           models_uri=models_uri))
            adapter.check_weights(weights, source=spec.model.base)
            root, dataset_fp = local_copy(spec.dataset.uri, ctx.cache_dir)
            dataset = prepare(root, work / "data", fingerprint=dataset_fp)
            entered_pipeline = True
            outcome = export_and_publish(
                spec, job_id=job_id, weights=weights, data_yaml=dataset.data_yaml,
                workdir=work / "export", models_uri=models_uri,
                metadata={"dataset_fingerprint": dataset_fp},
                reporter=reporter,
            )
    except TrainforgeError as exc:
        log.error("export failed (%s): %s", exc.code, exc.message)
        reporter.state("FAILED", exc.message, exc.code)
        _push_failure(spec, started, entered_pipeline)
        return 1
    except Exception as exc:  # the job must report before dying, whatever went wrong
        log.exception("export failed")
        reporter.state("FAILED", f"{type(exc).__name__}: {exc}", "internal")
        _push_failure(spec, started, entered_pipeline)
        return 1
    return _finish(outcome, reporter)


def _finish(outcome: ExportOutcome, reporter: JobReporter) -> int:
    where = outcome.published.manifest_uri if outcome.published else "nowhere"
    if outcome.failed:
        reason = (f"published {outcome.model}@{outcome.version} ({where}) without "
                  f"{', '.join(outcome.failed)}: {outcome.summary()}")
        log.error("%s", reason)
        reporter.state("FAILED", reason[:4000], ExportGateFailed.code)
        return 1
    reason = f"published {outcome.model}@{outcome.version} ({where}): {outcome.summary()}"
    log.info("%s", reason)
    reporter.state("SUCCEEDED", reason[:4000])
    return 0


def _push_failure(spec: JobSpec | None, started: float, entered_pipeline: bool) -> None:
    # The pipeline pushes its own metrics; before it, a failure still records its duration.
    if spec is None or entered_pipeline:
        return
    metrics.push(metrics.ExportMetrics(model=spec.name, duration_s=time.perf_counter() - started,
                                       succeeded=False, finished_at=time.time()))
