"""Where things live in the artifacts and models buckets (one place, used by every part)."""

from __future__ import annotations

from trainforge.storage.base import join_key


def job_prefix(job_id: str) -> str:
    return join_key("jobs", job_id) + "/"


#: The accepted spec's name among a job's artifacts (``GET /v1/jobs/{id}/artifacts``).
SPEC_ARTIFACT = "spec.json"


def spec_key(job_id: str) -> str:
    return join_key("jobs", job_id, SPEC_ARTIFACT)


def attempt_log_key(job_id: str, attempt: int) -> str:
    return join_key("jobs", job_id, "attempts", str(attempt), "log.txt")


def checkpoint_key(job_id: str, name: str = "last.pt") -> str:
    return join_key("jobs", job_id, "checkpoints", name)


def run_marker_key(job_id: str, run: int) -> str:
    """Written once by the n-th training run of a job, whoever started it (Ray Train restarting a
    worker, or a new attempt): the job's runs are counted here, across both."""
    return join_key("jobs", job_id, "runs", str(run))


def dataset_report_key(job_id: str) -> str:
    """The validation report of a job's dataset (uploaded when validation refuses it)."""
    return join_key("jobs", job_id, "dataset-report.json")


def train_output_prefix(job_id: str) -> str:
    """results.csv, plots, best.pt, last.pt and report.json of the finished run."""
    return join_key("jobs", job_id, "train") + "/"


def ray_storage_prefix(job_id: str) -> str:
    """Ray Train/Tune run storage (experiment state, trial checkpoints)."""
    return join_key("jobs", job_id, "ray") + "/"


def model_prefix(model_name: str, version: str) -> str:
    return join_key(model_name, version) + "/"


def manifest_key(model_name: str, version: str) -> str:
    return join_key(model_name, version, "manifest.json")


def alias_log_prefix(model_name: str, alias: str) -> str:
    """The append-only log of one alias's moves: one object per move, numbered from 1."""
    return join_key(model_name, "_aliases", alias) + "/"


def decision_key(model_name: str, version: str) -> str:
    """What the promotion policy decided for a version (comparison figures and verdict)."""
    return join_key(model_name, "_decisions", f"{version}.json")


def attempt_secrets_key(job_id: str, attempt: int) -> str:
    """Secrets the dispatcher hands one attempt through the store (outside ``jobs/<id>/``, so
    never listed as an artifact); see trainforge.constants.ENV_JOB_SECRETS_URI."""
    return join_key("internal", "attempts", job_id, str(attempt), "secrets.json")


def ui_session_revocation_key(session_id: str) -> str:
    """A signed-out dashboard session, kept until its cookie would have expired
    (services/api/ui/session_revocations.py); outside ``jobs/``, never listed as an artifact."""
    return join_key("internal", "ui-sessions", f"{session_id}.json")


def ui_session_revocations_prefix() -> str:
    return join_key("internal", "ui-sessions") + "/"
