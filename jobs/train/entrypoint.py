"""``python -m jobs.train --spec URI``: one training job, the same on a laptop and on a cluster.

Steps, each logging one outcome line with its duration: read the spec (refused when its
sha256 is not the one the API recorded); check its dataset and weights against the team's
storage access policy; sync the dataset into the team's node-local cache (keyed by
fingerprint); validate it strictly; write a local data.yaml;
resolve the base weights; train on Ray Train (checkpoints and per-epoch progress go out
while it runs, a restart resumes); evaluate best.pt on the test split; publish the model.

Exit status 0 means the model is published. Otherwise the job posted a FAILED StateEvent
with an ``error_code`` (when it could reach the API) and exits 1; a cancelled job (SIGTERM)
exits 143 without claiming failure.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from jobs.train import dataset_step, ray_runner
from jobs.train.artifacts import JobArtifacts
from jobs.train.dataset_step import SyncResult
from jobs.train.promote import promote_step
from jobs.train.publish import publish_result
from jobs.train.steps import configure_logging, step
from jobs.train.worker import WorkerConfig
from trainforge.access import EMBEDDED_TEAM, TEAM_NAME, AccessRules, TeamAccess
from trainforge.constants import (
    ENV_ATTEMPT,
    ENV_JOB_ACCESS,
    ENV_JOB_ID,
    ENV_JOB_TEAM,
    ENV_SPEC_SHA256,
)
from trainforge.errors import (
    ConfigError,
    DatasetError,
    SpecError,
    SpecTampered,
    StorageError,
    TrainforgeError,
)
from trainforge.joblog import ship_log
from trainforge.private import restrict_umask
from trainforge.reporting import JobReporter
from trainforge.settings import CommonSettings
from trainforge.spec import JobKind, JobSpec, load_spec
from trainforge.storage import open_location

log = logging.getLogger("jobs.train")

EXIT_FAILED = 1
EXIT_CANCELLED = 128 + signal.SIGTERM


class JobCancelled(BaseException):
    """SIGTERM: the dispatcher cancels the job. Not an Exception, so nothing swallows it."""


@dataclass(frozen=True)
class JobContext:
    """One attempt of one job, as the dispatcher launched it (or as run by hand).

    Attributes:
        team: the owner; its registry root is ``models_uri`` and its dataset cache
            ``cache_dir`` (nothing there is shared with other teams).
        access: what the job may read (trainforge/access.py), checked before any read; None
            only for a job run by hand outside the service, with the operator's own rights.
        spec_sha256: the checksum the API recorded for spec.json (None when run by hand).
    """

    job_id: str
    attempt: int
    spec_uri: str
    artifacts: JobArtifacts
    models_uri: str
    home: Path
    cache_dir: Path
    team: str = EMBEDDED_TEAM
    access: AccessRules | None = None
    spec_sha256: str | None = None

    @property
    def work_dir(self) -> Path:
        return self.home / "work" / self.job_id


#: The steps of one job kind after the shared setup: returns the published manifest's URI.
JobSteps = Callable[[JobContext, JobReporter], str]


@dataclass(frozen=True)
class PreparedJob:
    """What the steps every job kind shares produced (see :func:`prepare_job`)."""

    spec: JobSpec
    synced: SyncResult
    data_yaml: Path


def main(argv: list[str] | None = None, *, run: JobSteps | None = None,
         prog: str = "python -m jobs.train", description: str | None = None) -> int:
    """Run one job; returns the process exit status.

    Args:
        argv: command-line arguments (default: ``sys.argv``).
        run: the job's steps (default: :func:`run_job`, a training job); the sweep job passes
            its own and shares the log shipping, events and exit codes.
        prog, description: for ``--help``.
    """
    restrict_umask()  # what the job writes (work dir, caches, local Ray) is owner-only
    parser = argparse.ArgumentParser(prog=prog, description=description or __doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="job spec URI (s3://, file:// or a path)")
    args = parser.parse_args(argv)
    configure_logging()
    ctx = context_from_env(args.spec, CommonSettings())
    reporter = JobReporter.from_env()
    signal.signal(signal.SIGTERM, _cancel)
    log_key = ctx.artifacts.key(ctx.artifacts.log(ctx.attempt))
    with ship_log(ctx.artifacts.store, log_key):
        log.info("job %s attempt %d of team %s: spec %s; log -> %s", ctx.job_id, ctx.attempt,
                 ctx.team, ctx.spec_uri, ctx.artifacts.store.uri(log_key))
        if ctx.access is None:
            log.warning("run by hand (no %s): no storage access policy applies", ENV_JOB_ID)
        # The node-local work dir holds copies of the team's weights and data: start clean
        # (a killed attempt may have left one) and leave nothing behind; a retry resumes
        # from the artifacts store, never from here.
        shutil.rmtree(ctx.work_dir, ignore_errors=True)
        try:
            return _run_and_report(ctx, reporter, run or run_job)
        finally:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)


def context_from_env(spec_uri: str, settings: CommonSettings) -> JobContext:
    """The job's context from what the dispatcher set (trainforge/constants.py).

    A job launched by the service (``TRAINFORGE_JOB_ID`` set) always runs under access rules:
    those it was given, or none at all if they are missing, so a launch that lost them fails
    closed. A job run by hand runs as the embedded team with the operator's own rights.
    """
    launched = bool(os.environ.get(ENV_JOB_ID))
    job_id = os.environ.get(ENV_JOB_ID) or _local_job_id()
    team = os.environ.get(ENV_JOB_TEAM) or EMBEDDED_TEAM
    reserved = settings.reserved_locations()
    access: AccessRules | None = None
    if os.environ.get(ENV_JOB_ACCESS):
        access = AccessRules.from_env(os.environ[ENV_JOB_ACCESS], reserved=reserved)
        team = access.team
    elif launched:
        log.error("launched without %s: this job may read nothing", ENV_JOB_ACCESS)
        access = AccessRules.build(team, TeamAccess(), local_paths=False, reserved=reserved)
    if not TEAM_NAME.fullmatch(team):  # it names directories and the registry root
        raise ConfigError(f"{team!r} is not a team name (a DNS label)")
    return JobContext(
        job_id=job_id,
        attempt=int(os.environ.get(ENV_ATTEMPT) or 1),
        spec_uri=spec_uri,
        artifacts=JobArtifacts(settings.resolved_artifacts_uri, job_id),
        models_uri=settings.team_models_uri(team),
        home=settings.home,
        cache_dir=settings.team_dataset_cache(team),
        team=team,
        access=access,
        spec_sha256=os.environ.get(ENV_SPEC_SHA256) or None,
    )


def _run_and_report(ctx: JobContext, reporter: JobReporter, run: JobSteps) -> int:
    started = time.perf_counter()
    try:
        manifest_uri = run(ctx, reporter)
    except JobCancelled:
        log.warning("job %s cancelled (SIGTERM) after %.1fs", ctx.job_id,
                    time.perf_counter() - started)
        return EXIT_CANCELLED
    except TrainforgeError as exc:
        log.error("job %s FAILED [%s] after %.1fs: %s", ctx.job_id, exc.code,
                  time.perf_counter() - started, exc.message)
        reporter.state("FAILED", reason=exc.message[:4000], error_code=exc.code)
        return EXIT_FAILED
    except Exception as exc:
        log.exception("job %s FAILED with an unexpected error", ctx.job_id)
        reporter.state("FAILED", reason=f"{type(exc).__name__}: {exc}"[:4000],
                       error_code="internal")
        return EXIT_FAILED
    finally:
        ray_runner.shutdown()
    log.info("job %s SUCCEEDED in %.1fs: %s", ctx.job_id, time.perf_counter() - started,
             manifest_uri)
    reporter.state("SUCCEEDED", reason=f"published {manifest_uri}")
    return 0


def prepare_job(ctx: JobContext, reporter: JobReporter, kind: JobKind) -> PreparedJob:
    """The steps every job kind starts with: spec, dataset sync and validation, a local
    data.yaml, the base weights (resolved now so that a bad reference fails before Ray starts).

    Raises:
        TrainforgeError: a step failed; ``code`` says which kind of failure.
    """
    with step("spec") as out:
        spec = read_spec(ctx.spec_uri, kind, expected_sha256=ctx.spec_sha256)
        out.text = f"{spec.kind} job for model {spec.name!r} on {spec.dataset.uri}"
    with step("access") as out:
        out.text = check_access(ctx, spec)
    reporter.state("RUNNING")
    with step("dataset-sync") as out:
        synced = dataset_step.sync(spec.dataset.uri, ctx.cache_dir)
        out.text = (f"{synced.fingerprint}: {synced.files_downloaded}/{synced.files_total} "
                    f"files, {synced.bytes_downloaded} bytes downloaded -> {synced.path}")
    reporter.message("dataset synced", fingerprint=synced.fingerprint,
                     bytes_downloaded=synced.bytes_downloaded,
                     files_downloaded=synced.files_downloaded, files_total=synced.files_total)
    with step("dataset-validate") as out:
        report = dataset_step.validate(synced.path, decode=True)
        if not report.ok:
            key = ctx.artifacts.dataset_report()
            ctx.artifacts.store.put(ctx.artifacts.key(key), report.to_json().encode(),
                                    content_type="application/json")
            raise DatasetError(
                f"dataset {spec.dataset.uri} failed validation with {len(report.problems)} "
                f"problem(s), first: {_describe(report.problems[0])}; "
                f"full report: {ctx.artifacts.uri(key)}")
        out.text = f"valid, classes {report.names}"
    with step("data-yaml") as out:
        data_yaml = dataset_step.write_local_data_yaml(synced.path, ctx.work_dir / "data.yaml")
        split = "test" if dataset_step.has_split(data_yaml, "test") else "val (no test split)"
        out.text = f"{data_yaml}; evaluation split: {split}"
    with step("weights") as out:
        from jobs.train import adapter
        from trainforge.weights import resolve_weights

        adapter.prepare_environment(ctx.work_dir / "ultralytics")
        # Before anything here loads weights (and before Ray starts: its processes inherit it).
        adapter.harden_loading()
        weights = resolve_weights(spec.model.base, ctx.work_dir / "weights",
                                  models_uri=ctx.models_uri)
        if weights.endswith((".yaml", ".yml")):
            out.text = f"{weights} (a model YAML: training from scratch)"
        else:
            adapter.check_weights(Path(weights), source=spec.model.base)
            out.text = f"{weights}: an Ultralytics detection checkpoint"
    return PreparedJob(spec, synced, data_yaml)


def run_job(ctx: JobContext, reporter: JobReporter) -> str:
    """The training job's steps in order; returns the published manifest's URI.

    Raises:
        TrainforgeError: a step failed; ``code`` says which kind of failure.
    """
    prepared = prepare_job(ctx, reporter, JobKind.TRAIN)
    spec, synced = prepared.spec, prepared.synced
    with step("ray-connect") as out:
        cluster = ray_runner.connect(spec.resources)
        out.text = cluster.description
        signal.signal(signal.SIGTERM, _cancel)  # ray.init installs its own handler
    spec = ray_runner.fit_to_cluster(spec, cluster, reporter)
    with step("train") as out:
        ray_runner.run(WorkerConfig(
            spec=spec, job_id=ctx.job_id, attempt=ctx.attempt, access=ctx.access,
            artifacts_uri=ctx.artifacts.artifacts_uri, models_uri=ctx.models_uri,
            work_root=str(ctx.home / "work"), cache_dir=str(ctx.cache_dir),
            dataset_path=str(synced.path), dataset_fingerprint=synced.fingerprint,
            entrypoint_node=_ray_node_id(),
        ))
        out.text = f"outputs in {ctx.artifacts.uri(ctx.artifacts.train_output(''))}"
    with step("publish") as out:
        published = publish_result(spec, ctx.job_id, ctx.artifacts, ctx.models_uri,
                                   ctx.work_dir, data_yaml=prepared.data_yaml, reporter=reporter)
        out.text = published.manifest_uri + ("" if published.created else " (already there)")
    reporter.message("model published", manifest=published.manifest_uri,
                     version=ctx.job_id)
    promote_step(spec, ctx.job_id, models_uri=ctx.models_uri, data_yaml=prepared.data_yaml,
                 work_dir=ctx.work_dir, artifacts=ctx.artifacts, reporter=reporter,
                 dataset_fingerprint=prepared.synced.fingerprint)
    return published.manifest_uri


def check_access(ctx: JobContext, spec: JobSpec) -> str:
    """Check the spec's dataset and weights against the job's access rules before any read:
    a spec.json changed behind the API's back cannot make the job read elsewhere.

    Returns:
        A line for the log.

    Raises:
        AccessDenied, LocationInvalid: a location the team may not read.
    """
    if ctx.access is None:
        return "run by hand: not checked"
    ctx.access.check_spec(spec.dataset.uri, spec.model.base)
    return f"team {ctx.team} may read {spec.dataset.uri} and {spec.model.base}"


def read_spec(uri: str, kind: JobKind = JobKind.TRAIN, *,
              expected_sha256: str | None = None) -> JobSpec:
    """Load a job spec and check that it is of ``kind`` (and, when given, its checksum).

    Raises:
        SpecTampered: its sha256 is not ``expected_sha256`` (the one the API recorded).
        SpecError: unreadable, invalid, or of another kind.
    """
    try:
        store, key = open_location(uri)
        text = store.get(key)
    except StorageError as exc:
        raise SpecError(f"cannot read the job spec {uri}: {exc.message}") from None
    if expected_sha256 and hashlib.sha256(text).hexdigest() != expected_sha256:
        raise SpecTampered(f"{uri} is not the spec the API accepted (sha256 differs from "
                           f"{expected_sha256[:12]}…); refusing to run it")
    spec = load_spec(text, source=uri)
    if spec.kind is not kind:
        raise SpecError(f"{uri}: kind is {spec.kind.value!r}; run it with "
                        f"python -m jobs.{spec.kind.value}")
    return spec


def _describe(problem: object) -> str:
    fmt = getattr(problem, "format", None)
    return str(fmt() if callable(fmt) else problem)


def _ray_node_id() -> str | None:
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None


def _local_job_id() -> str:
    """An id for a job started by hand (outside the service)."""
    return time.strftime("local-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def _cancel(signum: int, frame: FrameType | None) -> None:
    raise JobCancelled()
