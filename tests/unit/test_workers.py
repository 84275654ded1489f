"""``resources.workers`` and ``gpus_per_worker``: parsing, the older ``gpus`` form, team limits,
and how a local Ray fits a data-parallel spec to its machine."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.core.ray_cluster import Cluster, fit_to_cluster
from services.store.admission import check_job_limits, gpus_requested
from services.store.settings import TeamLimits
from trainforge.errors import LimitExceeded, ResourcesUnavailable, SpecError
from trainforge.events import MessageEvent
from trainforge.reporting import JobReporter
from trainforge.spec import JobSpec, Resources, parse_spec


def spec(resources: dict[str, Any], **extra: Any) -> JobSpec:
    return parse_spec({"name": "d", "dataset": {"uri": "s3://d/"}, "resources": resources,
                       **extra})


def test_defaults_are_one_worker_with_one_gpu() -> None:
    resources = Resources()
    assert (resources.workers, resources.gpus_per_worker, resources.total_gpus) == (1, 1, 1)


@pytest.mark.parametrize(("gpus", "workers", "per_worker"), [(0, 1, 0), (1, 1, 1), (4, 4, 1)])
def test_the_older_gpus_form_keeps_its_gpus(gpus: int, workers: int, per_worker: int) -> None:
    resources = spec({"gpus": gpus, "cpus": 4}).resources
    assert (resources.workers, resources.gpus_per_worker) == (workers, per_worker)
    assert resources.total_gpus == gpus
    assert "gpus" not in resources.model_dump(), "specs are stored in the current form"


def test_gpus_and_workers_together_are_refused() -> None:
    with pytest.raises(SpecError, match="gpus is the older form of workers and gpus_per_worker"):
        spec({"gpus": 2, "workers": 2})


def test_more_than_one_gpu_per_worker_points_at_workers() -> None:
    with pytest.raises(SpecError, match="for N GPUs ask for workers: N"):
        spec({"workers": 2, "gpus_per_worker": 4})


@pytest.mark.parametrize("resources", [{"workers": 0}, {"workers": 65}, {"gpus": 65},
                                       {"gpus": "two"}])
def test_worker_counts_are_bounded(resources: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="resources"):
        spec(resources)


def test_the_global_batch_needs_an_image_per_worker() -> None:
    with pytest.raises(SpecError, match=r"train.batch \(4\) is the global batch"):
        spec({"workers": 8}, train={"batch": 4})
    assert spec({"workers": 3}, train={"batch": 16}).resources.workers == 3  # 5 per worker


def test_rectangular_batches_need_one_worker() -> None:
    with pytest.raises(SpecError, match="train.rect needs one worker"):
        spec({"workers": 2}, train={"rect": True})


def test_team_limits_count_every_workers_gpus() -> None:
    limits = TeamLimits(max_gpus_per_job=8)
    big = spec({"workers": 9, "gpus_per_worker": 1})
    assert gpus_requested(big) == 9
    with pytest.raises(LimitExceeded, match="asks for 9 GPUs"):
        check_job_limits(big, "vision", limits)
    check_job_limits(spec({"workers": 8}), "vision", limits)
    check_job_limits(spec({"workers": 32, "gpus_per_worker": 0}, train={"batch": 64}),
                     "vision", limits)


class Messages(JobReporter):
    """Keeps what the job would post (a reporter without an API only records)."""

    def __init__(self) -> None:
        super().__init__(None, None, None)

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.message, e.data) for e in self.sent if isinstance(e, MessageEvent)]


def test_a_local_cpu_machine_trains_every_worker_on_the_cpu() -> None:
    reporter = Messages()
    fitted = fit_to_cluster(spec({"workers": 2, "cpus": 8}),
                            Cluster("local", gpus=0, cpus=2, local=True), reporter)
    assert (fitted.resources.workers, fitted.resources.gpus_per_worker) == (2, 0)
    assert fitted.resources.cpus == 1, "each worker gets its share of the machine"
    [(text, data)] = reporter.messages()
    assert "asks for 2 worker(s) with 1 GPU each" in text and data["gpus"] == 0


def test_a_local_machine_with_fewer_gpus_keeps_one_worker_per_gpu() -> None:
    fitted = fit_to_cluster(spec({"workers": 4, "cpus": 2}),
                            Cluster("local", gpus=2, cpus=16, local=True), Messages())
    assert (fitted.resources.workers, fitted.resources.gpus_per_worker) == (2, 1)


def test_more_workers_than_local_cpus_is_refused() -> None:
    with pytest.raises(ResourcesUnavailable, match="each worker needs one at least"):
        fit_to_cluster(spec({"workers": 3, "gpus_per_worker": 0, "cpus": 1}),
                       Cluster("local", gpus=0, cpus=2, local=True), Messages())


def test_a_cluster_takes_the_spec_as_it_is() -> None:
    asked = spec({"workers": 16, "cpus": 8})
    assert fit_to_cluster(asked, Cluster("ray", gpus=0, cpus=2, local=False), Messages()) is asked


def sweep(**params: Any) -> JobSpec:
    return parse_spec({"kind": "sweep", "name": "d", "dataset": {"uri": "s3://d/"},
                       "sweep": {"space": {"lr0": {"uniform": [0.001, 0.1]}}, **params}})


def test_a_data_parallel_trial_needs_whole_gpus_and_an_image_per_worker() -> None:
    assert sweep(workers_per_trial=4, gpus_per_trial=1).sweep is not None
    with pytest.raises(SpecError, match="need a whole GPU each"):
        sweep(workers_per_trial=2, gpus_per_trial=0.5)
    with pytest.raises(SpecError, match=r"a trial's batch \(8\) is the global batch"):
        sweep(workers_per_trial=16, space={"batch": {"choice": [8, 32]}})


def test_data_parallel_trials_reserve_a_bundle_per_worker_and_count_in_limits() -> None:
    from jobs.sweep.space import default_concurrency, trial_resources

    four = sweep(workers_per_trial=4, gpus_per_trial=1, cpus_per_trial=2, trials=8).sweep
    assert four is not None
    assert trial_resources(four).bundles == [{"CPU": 2, "GPU": 1}] * 4
    assert default_concurrency(four, {"CPU": 64, "GPU": 8}) == 2  # 8 GPUs / (4 × 1)
    one = four.model_copy(update={"workers_per_trial": 1})
    assert trial_resources(one) == {"cpu": 2, "gpu": 1}
    assert gpus_requested(sweep(workers_per_trial=4, trials=3)) == 12
    with pytest.raises(LimitExceeded, match="asks for 12 GPUs"):
        check_job_limits(sweep(workers_per_trial=4, trials=3), "vision",
                         TeamLimits(max_gpus_per_job=8))


def test_a_local_machine_refuses_a_trial_larger_than_itself() -> None:
    with pytest.raises(ResourcesUnavailable, match="a trial needs"):
        fit_to_cluster(sweep(workers_per_trial=3, gpus_per_trial=0, cpus_per_trial=1),
                       Cluster("local", gpus=0, cpus=2, local=True), Messages())
