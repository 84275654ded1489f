"""Stands in for the training entrypoint (``python -m jobs.train``) in dispatcher/API tests.

It speaks the same contract as a real job entrypoint, in well under a second: reads the spec
from ``--spec URI``, reports RUNNING, a few ProgressEvents (per trial for sweeps, after the
sweep's plan notice) and the outcome through :class:`trainforge.reporting.JobReporter`, ships
its log with
:func:`trainforge.joblog.ship_log`, writes a couple of small artifacts, and exits 0.

The spec's ``name`` selects other behaviours tests need:

- contains ``fail``: reports FAILED (error code ``standin_failure``) and exits 3;
- contains ``invalid``: reports FAILED with ``dataset_invalid`` (not retryable) and exits 2;
- contains ``flaky``: fails on attempt 1, succeeds on later attempts;
- contains ``sleep``: reports RUNNING then sleeps (up to 10 minutes) until it is cancelled;
- contains ``stubborn``: like ``sleep``, but survives SIGTERM, counting each one it receives
  in ``jobs/<id>/attempts/<n>/sigterms`` (only SIGKILL stops it);
- contains ``crash``: writes a traceback-like line to stderr and exits 4 without reporting
  anything (a job that dies before it can post its failure).

Every run also writes ``jobs/<id>/attempts/<n>/runs/<pid>-<random>`` so that tests can count
how many times an attempt really started.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import time

from trainforge.constants import ENV_ARTIFACTS_URI, ENV_ATTEMPT, ENV_JOB_ID
from trainforge.events import SWEEP_METRIC, SWEEP_TRIALS
from trainforge.joblog import ship_log
from trainforge.reporting import JobReporter
from trainforge.spec import JobKind, JobSpec, load_spec
from trainforge.storage import ObjectStore, join_key, open_location

log = logging.getLogger("tests.standin")


def _artifacts(job_id: str) -> tuple[ObjectStore, str] | None:
    uri = os.environ.get(ENV_ARTIFACTS_URI)
    if not uri:
        return None
    store, prefix = open_location(uri.rstrip("/") + "/")
    return store, join_key(prefix, "jobs", job_id)


def _count_sigterms(store: ObjectStore, prefix: str, attempt: int) -> None:
    key = join_key(prefix, "attempts", str(attempt), "sigterms")
    received = 0

    def count(_signum: int, _frame: object) -> None:
        nonlocal received
        received += 1
        store.put(key, f"{received}\n".encode())

    signal.signal(signal.SIGTERM, count)
    store.put(key, b"0\n")  # the handler is in place


def run(spec: JobSpec, reporter: JobReporter, job_id: str, attempt: int) -> int:
    location = _artifacts(job_id)
    if location is not None:
        store, prefix = location
        marker = join_key(prefix, "attempts", str(attempt), "runs",
                          f"{os.getpid()}-{secrets.token_hex(4)}")
        store.put(marker, b"started\n")
    log.info("stand-in job %s attempt %d: %s (%s)", job_id, attempt, spec.name, spec.kind)
    if "crash" in spec.name:
        print("ImportError: stand-in crashed before it could report", file=sys.stderr)
        return 4
    if "invalid" in spec.name:
        reporter.state("FAILED", "data.yaml: names missing", error_code="dataset_invalid")
        return 2
    if "fail" in spec.name or ("flaky" in spec.name and attempt == 1):
        reporter.state("FAILED", f"stand-in failure on attempt {attempt}",
                       error_code="standin_failure")
        return 3
    reporter.state("RUNNING", "stand-in started")
    if "stubborn" in spec.name and location is not None:
        _count_sigterms(*location, attempt)
    if "sleep" in spec.name or "stubborn" in spec.name:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            time.sleep(0.2)
        return 0
    epochs = min(spec.train.epochs, 3)
    trials = (
        [f"trial_{i}" for i in range(min(spec.sweep.trials, 3))]
        if spec.kind is JobKind.SWEEP and spec.sweep is not None
        else [None]
    )
    if spec.kind is JobKind.SWEEP and spec.sweep is not None:
        reporter.notice(f"sweep: {len(trials)} stand-in trials",
                        **{SWEEP_TRIALS: len(trials), SWEEP_METRIC: spec.sweep.metric})
    for epoch in range(1, epochs + 1):
        for index, trial in enumerate(trials):
            metrics = {
                "metrics/mAP50-95(B)": round(0.1 * epoch + 0.01 * index, 4),
                "metrics/mAP50(B)": round(0.15 * epoch + 0.01 * index, 4),
                "train/box_loss": round(1.0 / epoch, 4),
            }
            reporter.progress(epoch, epochs, metrics, trial=trial, attempt=attempt)
        log.info("epoch %d/%d done", epoch, epochs)
    if location is not None:
        store, prefix = location
        store.put(join_key(prefix, "train", "results.csv"),
                  b"epoch,mAP50-95\n1,0.1\n2,0.2\n3,0.3\n")
        store.put(join_key(prefix, "train", "best.pt"), b"stand-in weights\n")
    reporter.state("SUCCEEDED", "stand-in finished")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="stand-in job entrypoint for tests")
    parser.add_argument("--spec", required=True, help="URI of the job's spec.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    job_id = os.environ.get(ENV_JOB_ID, "local")
    attempt = int(os.environ.get(ENV_ATTEMPT) or 1)
    store, key = open_location(args.spec)
    spec = load_spec(store.get(key), source=args.spec)
    location = _artifacts(job_id)
    if location is None:
        return run(spec, JobReporter.from_env(), job_id, attempt)
    artifacts, prefix = location
    log_key = join_key(prefix, "attempts", str(attempt), "log.txt")  # layout.attempt_log_key
    with ship_log(artifacts, log_key, interval_s=0.5):
        return run(spec, JobReporter.from_env(), job_id, attempt)


if __name__ == "__main__":
    sys.exit(main())
