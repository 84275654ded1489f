"""The skeleton every job kind runs in: ``python -m jobs.<kind> --spec URI``.

:func:`main` reads the job's context from what the dispatcher set (team, access rules, spec
checksum; trainforge/constants.py), ships the log to ``jobs/<id>/attempts/<n>/log.txt`` while
the job runs and once more at exit, turns SIGTERM into :class:`JobCancelled` (exit 143, no
FAILED claim), runs the kind's steps, and reports the outcome: SUCCEEDED with what was
published (exit 0), or FAILED with the error's code (exit 1). :func:`prepare_job` holds the
steps every kind starts with: spec (checksum and kind checked), access, dataset sync into the
team's cache, strict validation, a local data.yaml, the base weights loaded the safe way.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

from jobs.core import dataset_step, ray_cluster
from jobs.core.artifacts import JobArtifacts
from jobs.core.dataset_step import SyncResult
from jobs.core.steps import configure_logging, step, stopped_in
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

log = logging.getLogger("jobs")

EXIT_FAILED = 1
EXIT_CANCELLED = 128 + signal.SIGTERM


class JobCancelled(KeyboardInterrupt):
    """SIGTERM: the dispatcher cancels the job.

    Not an Exception, so nothing swallows it; a KeyboardInterrupt because that is the one
    exception Ray's blocking waits give up on: raised by the signal handler while the main
    thread waits in ``ray.get`` (Ray Train's ``fit``), any other is held until training ends
    by itself. Ray raises a plain KeyboardInterrupt in its place; :func:`cancel_requested`
    tells the two apart.
    """


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
    #: The local base weights (a .pt checked the safe way), or a model YAML's name.
    weights: str


def main(argv: list[str] | None = None, *, run: JobSteps, prog: str,
         description: str | None = None) -> int:
    """Run one job; returns the process exit status.

    Args:
        argv: command-line arguments (default: ``sys.argv``).
        run: the job kind's steps (jobs/train, jobs/sweep, jobs/export each pass theirs and
            share the log shipping, events, cancellation and exit codes).
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
    install_cancel_handler()
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
            return _run_and_report(ctx, reporter, run)
        finally:
            shutil.rmtree(ctx.work_dir, ignore_errors=True)


def exit_now(code: int) -> NoReturn:
    """End the job's process with ``code`` once :func:`main` returned it.

    By then the outcome is reported, the log shipped and Ray shut down: nothing is left to
    save. The interpreter's own teardown (Ray's, torch's and Ultralytics' exit hooks and
    threads) is skipped: it took 2-4 s on a busy machine, which a cancelled job's user waits
    for (the job is CANCELLED only once its process has exited).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


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
    except (KeyboardInterrupt, SystemExit) as exc:
        if not _is_cancel(exc):
            raise
        where = stopped_in()
        log.warning("job %s cancelled (SIGTERM) %s after %.1fs; stopping Ray and shipping "
                    "the log", ctx.job_id, f"in step {where}" if where else "between steps",
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
        ray_cluster.shutdown()
        # What is left is the outcome's report and the log's last upload: a late SIGTERM must
        # not cut them short (and after ray.shutdown() it would kill the process at once).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
        from jobs.core import adapter
        from jobs.core.weights import resolve_weights

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
    return PreparedJob(spec, synced, data_yaml, weights)


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


def _local_job_id() -> str:
    """An id for a job started by hand (outside the service)."""
    return time.strftime("local-%Y%m%d-%H%M%S-", time.gmtime()) + secrets.token_hex(3)


def install_cancel_handler() -> None:
    """SIGTERM (the dispatcher cancels the job) raises :class:`JobCancelled` in the main thread,
    once: a later SIGTERM must not interrupt the cleanup the first one started (Ray's
    shutdown, the log's last upload).

    Call again after anything that installs its own handler (``ray.init`` does)."""
    signal.signal(signal.SIGTERM, _cancel)


_cancelling = False


def cancel_requested() -> bool:
    """Whether this process received the SIGTERM that cancels the job."""
    return _cancelling


def _cancel(signum: int, frame: FrameType | None) -> None:
    global _cancelling
    if _cancelling:
        return
    _cancelling = True
    raise JobCancelled()


def _is_cancel(exc: KeyboardInterrupt | SystemExit) -> bool:
    """Whether ``exc`` is the job's cancellation: :class:`JobCancelled`, the KeyboardInterrupt
    Ray raises in its place, or ray.init's own SIGTERM handler (in place while it connects),
    which exits with the signal's number."""
    if isinstance(exc, SystemExit):
        return exc.code == signal.SIGTERM
    return isinstance(exc, JobCancelled) or cancel_requested()
