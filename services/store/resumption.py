"""Resuming a stopped training job as a new job (``POST /v1/jobs/{id}/resume``).

A resumed job is an ordinary job: its own id, attempts, retries and timeout, created through
the one creation path (services/store/submission.py: access, limits, the active-job quota,
the Idempotency-Key) from the stopped job's spec, with ``train.epochs`` changed when asked.
What makes it continue is where its first checkpoint comes from: the creation path copies the
stopped job's ``checkpoints/last.pt`` (and ``best.pt``) into the new job's own
``jobs/<new id>/checkpoints/`` before the new job's row exists, and that is where every
attempt of a training job looks first (jobs/train/worker.py). So the job is told nothing it
could be lied to about (no spec field, no environment variable) and reads nothing but its own
corner of the artifacts store, as a retried attempt does; the checkpoint is loaded through the
same safety checks as any checkpoint (jobs/core/adapter/safety.py). On S3 the copy is
server-side.

Which jobs can be resumed: a training job that was CANCELLED or FAILED (a timed-out attempt is
a failed one), left a checkpoint, and was not resumed already (``jobs.resumed_from`` is
unique, so resumptions form a chain: resume its newest link, which holds this job's
checkpoint or a later one). Anything else is refused with :class:`JobNotResumable` (409)
saying what to do instead; a new total of epochs below what the job already trained is a
:class:`SpecError` (422). A stopped job without a checkpoint is refused rather than started
from scratch: resuming promises to continue, and ``jobs submit`` of the same spec starts over.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from services.store import jobs as repo
from services.store.db import Database
from services.store.domain import Job, Progress
from trainforge.errors import JobNotResumable, ObjectNotFound, SpecError, SpecTampered
from trainforge.layout import checkpoint_key, spec_key
from trainforge.spec import JobKind, JobSpec, parse_spec
from trainforge.states import JobState
from trainforge.storage import ObjectStore, join_key

__all__ = ["CHECKPOINTS", "ResumeFrom", "Resumption", "check", "checkpoint_keys", "plan"]

#: The checkpoints a resumed job starts with; ``last.pt`` must exist, ``best.pt`` may not
#: (a stopped job's best epoch so far, which its continuation must still beat).
CHECKPOINTS = ("last.pt", "best.pt")


@dataclass(frozen=True)
class ResumeFrom:
    """What the creation path needs to make a new job continue a stopped one.

    Attributes:
        job_id: the stopped job (the new job's ``resumed_from``).
        progress: the epochs it trained, of the new job's total: the new job's progress
            until it reports its own.
    """

    job_id: str
    progress: Progress | None


@dataclass(frozen=True)
class Resumption:
    """A planned resumption: the new job's spec, and what it continues."""

    spec: JobSpec
    source: ResumeFrom


def plan(db: Database, artifacts: ObjectStore, artifacts_prefix: str, team: str,
         job_id: str, *, epochs: int | None) -> Resumption:
    """Check that ``job_id`` can be resumed and build the new job's spec.

    Args:
        db: the job store.
        artifacts: the artifacts store, and ``artifacts_prefix`` the key prefix inside it.
        team: the caller's team (another team's job is a :class:`JobNotFound`).
        job_id: the stopped job.
        epochs: the new total of epochs; ``None`` keeps the stopped job's.

    Returns:
        The new job's spec (the stopped job's, with ``train.epochs`` replaced) and its source.

    Raises:
        JobNotFound: no such job for this team.
        JobNotResumable: see :func:`check`; also when the job left no checkpoint.
        SpecTampered: the stored spec is not the one the API accepted.
        SpecError: ``epochs`` is below the epochs the job already trained, or the stored spec
            no longer validates.
        StorageError: the artifacts store failed.
    """
    job = check(db, team, job_id)
    if not artifacts.exists(join_key(artifacts_prefix, checkpoint_key(job.id))):
        raise JobNotResumable(
            f"job {job.id} left no checkpoint (it stopped before finishing its first epoch): "
            "there is nothing to continue; submit its spec again to start over")
    spec = _stored_spec(artifacts, artifacts_prefix, job, epochs)
    trained = job.progress.epoch if job.progress else None
    if trained is not None and spec.train.epochs < trained:
        raise SpecError(
            f"epochs: {spec.train.epochs} is fewer than the {trained} epochs job {job.id} has "
            f"already trained (its checkpoint); ask for {trained} or more ({trained} trains "
            "nothing more: the job evaluates and publishes what it has)")
    progress = Progress(trained, spec.train.epochs) if trained is not None else None
    return Resumption(spec, ResumeFrom(job.id, progress))


def check(db: Database, team: str, job_id: str) -> Job:
    """The team's job ``job_id``, if its kind and state let it be resumed.

    Returns:
        The job.

    Raises:
        JobNotFound: no such job for this team.
        JobNotResumable: not a training job, still active, succeeded, or resumed already.
    """
    with db.transaction() as session:
        job = repo.get_job(session, job_id, team=team)
        resumed_as = repo.resumed_by(session, job.id, team=team)
    if job.kind is not JobKind.TRAIN:
        raise JobNotResumable(
            f"job {job.id} is a {job.kind.value} job; only training jobs can be resumed "
            + ("(a sweep's trials are runs of their own, which Ray Tune does not carry over to "
               "a new job)" if job.kind is JobKind.SWEEP else "(an export has no epochs)")
            + ": submit it again")
    if job.state is JobState.SUCCEEDED:
        raise JobNotResumable(
            f"job {job.id} succeeded: its model is published as {job.name}@{job.id}. To train "
            f"it further, submit a job with model.base: registry://{job.name}@{job.id} (a new "
            "run from epoch 1 that fine-tunes those weights)")
    if job.state is JobState.CANCELLING:
        raise JobNotResumable(f"job {job.id} is CANCELLING; resume it once it is CANCELLED")
    if not job.state.terminal:
        raise JobNotResumable(
            f"job {job.id} is {job.state}: it resumes from its own checkpoint if an attempt "
            f"fails. To stop it and continue later: trainforge jobs cancel {job.id}, then "
            f"trainforge jobs resume {job.id}")
    if resumed_as is not None:
        raise JobNotResumable(
            f"job {job.id} was already resumed as job {resumed_as}; resume that one instead "
            f"(trainforge jobs resume {resumed_as}): it holds {job.id}'s checkpoint or a "
            "later one")
    return job


def checkpoint_keys(artifacts_prefix: str, source_id: str, target_id: str
                    ) -> list[tuple[str, str]]:
    """(source key, destination key) of each of :data:`CHECKPOINTS`, stopped job to new."""
    return [(join_key(artifacts_prefix, checkpoint_key(source_id, name)),
             join_key(artifacts_prefix, checkpoint_key(target_id, name)))
            for name in CHECKPOINTS]


def copy_checkpoints(artifacts: ObjectStore, artifacts_prefix: str, source_id: str,
                     target_id: str) -> None:
    """Copy the stopped job's checkpoints into the new job's (see the module docstring).

    Raises:
        JobNotResumable: ``last.pt`` is gone since :func:`plan` saw it.
        StorageError: the artifacts store failed.
    """
    for (source, dest), name in zip(checkpoint_keys(artifacts_prefix, source_id, target_id),
                                    CHECKPOINTS, strict=True):
        try:
            artifacts.copy(source, dest)
        except ObjectNotFound:
            if name == "last.pt":
                raise JobNotResumable(f"job {source_id}'s checkpoint is gone from the "
                                      "artifacts store; there is nothing to continue") from None


def _stored_spec(artifacts: ObjectStore, artifacts_prefix: str, job: Job,
                 epochs: int | None) -> JobSpec:
    """The stopped job's spec as the API accepted it, with ``train.epochs`` replaced.

    Raises:
        JobNotResumable: the spec is gone.
        SpecTampered: its sha256 is not the one recorded with the job.
        SpecError: it no longer validates (or with the new epochs).
    """
    try:
        text = artifacts.get(join_key(artifacts_prefix, spec_key(job.id)))
    except ObjectNotFound:
        raise JobNotResumable(f"job {job.id}'s spec is gone from the artifacts store") \
            from None
    if hashlib.sha256(text).hexdigest() != job.spec_sha256:
        raise SpecTampered(f"the stored spec of job {job.id} is not the spec the API accepted "
                           "(its sha256 differs); refusing to resume from it")
    data = json.loads(text)
    if epochs is not None:
        data["train"] = {**data.get("train", {}), "epochs": epochs}
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise SpecError(f"the spec of job {job.id} does not validate as it would be resumed: "
                        f"{exc.message}") from None
