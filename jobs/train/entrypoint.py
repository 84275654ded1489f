"""``python -m jobs.train --spec URI``: one training job, the same on a laptop and on a cluster.

Steps, each logging one outcome line with its duration: read the spec (refused when its
sha256 is not the one the API recorded); check its dataset and weights against the team's
storage access policy; sync the dataset into the team's node-local cache (keyed by
fingerprint); validate it strictly; write a local data.yaml;
resolve the base weights; train on Ray Train (checkpoints and per-epoch progress go out
while it runs, a restart resumes); evaluate best.pt on the test split; publish the model;
with a ``promote`` section, let it take the alias only if it beats the current version
(jobs/train/promote.py). The shared skeleton around these steps is jobs/core/runtime.py.

Exit status 0 means the model is published. Otherwise the job posted a FAILED StateEvent
with an ``error_code`` (when it could reach the API) and exits 1; a cancelled job (SIGTERM)
exits 143 without claiming failure.
"""

from __future__ import annotations

from jobs.core import ray_cluster, runtime
from jobs.core.runtime import JobContext
from jobs.core.steps import step
from jobs.export.publish import publish_result
from jobs.train import ray_runner
from jobs.train.promote import promote_step
from jobs.train.worker import WorkerConfig
from trainforge.reporting import JobReporter
from trainforge.spec import JobKind


def main(argv: list[str] | None = None) -> int:
    """Run one training job; returns the process exit status."""
    return runtime.main(argv, run=run_job, prog="python -m jobs.train", description=__doc__)


def run_job(ctx: JobContext, reporter: JobReporter) -> str:
    """The training job's steps in order; returns the published manifest's URI.

    Raises:
        TrainforgeError: a step failed; ``code`` says which kind of failure.
    """
    prepared = runtime.prepare_job(ctx, reporter, JobKind.TRAIN)
    spec, synced = prepared.spec, prepared.synced
    with step("ray-connect") as out:
        cluster = ray_cluster.connect(spec.resources)
        out.text = cluster.description
        runtime.install_cancel_handler()  # ray.init installs its own handler
    spec = ray_cluster.fit_to_cluster(spec, cluster, reporter)
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


def _ray_node_id() -> str | None:
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else None
