"""The sweep section in Tune's terms, and the refusal of search spaces that cannot train."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from jobs.sweep.space import (
    SweepPlan,
    default_concurrency,
    param_space,
    scheduler,
    searcher,
    trial_params,
    trial_resources,
)
from trainforge.errors import HyperparameterMismatch, SpecError
from trainforge.spec import JobSpec, SweepParams, TrainParams, parse_spec

BASE: dict[str, Any] = {"kind": "sweep", "name": "shapes", "dataset": {"uri": "/data"},
                        "train": {"epochs": 10}}
SPACE: dict[str, Any] = {
    "lr0": {"loguniform": [1e-4, 1e-1]},
    "momentum": {"uniform": [0.8, 0.95]},
    "batch": {"choice": [8, 16, 32]},
    "close_mosaic": {"randint": [0, 4]},
    "optimizer": {"choice": ["SGD", "AdamW"]},
    "mosaic": {"uniform": [0.0, 1.0]},
}


def sweep_job(**sweep: Any) -> JobSpec:
    return parse_spec({**BASE, "sweep": {"space": SPACE, **sweep}})


def test_every_domain_form_samples_values_the_trial_accepts() -> None:
    from ray.tune.search.sample import Domain

    spec = sweep_job()
    assert spec.sweep is not None
    space = param_space(spec.sweep)
    assert set(space) == set(SPACE) and all(isinstance(d, Domain) for d in space.values())
    rng = np.random.default_rng(0)
    for _ in range(50):
        config = {k: d.sample(random_state=rng) for k, d in space.items()}
        params = trial_params(spec.train, config)
        assert 1e-4 <= params.lr0 <= 1e-1 and 0.8 <= params.momentum <= 0.95
        assert params.batch in (8, 16, 32) and params.optimizer in ("SGD", "AdamW")
        assert 0 <= params.augment.close_mosaic <= 3, "randint's upper end is excluded"
        assert params.augment.mosaic == pytest.approx(float(config["mosaic"]))
        assert params.epochs == 10, "what the space does not name comes from the train section"


@pytest.mark.parametrize(("space", "message"), [
    ({"lr0": {"loguniform": [1e-4, 2.0]}}, "lr0: loguniform value 2.0 is not allowed"),
    ({"momentum": {"uniform": [0.8, 1.0]}}, "momentum: uniform value 1.0 is not allowed"),
    ({"batch": {"uniform": [8, 32]}}, "batch is an integer; use randint or choice"),
    ({"imgsz": {"randint": [320, 641]}}, "imgsz: sizes must be multiples of 32"),
    ({"imgsz": {"choice": [320, 330]}}, "imgsz: choice value 330 is not allowed"),
    ({"cos_lr": {"uniform": [0, 1]}}, "cos_lr takes true or false"),
    ({"optimizer": {"choice": ["SGD", "Lion"]}}, "optimizer: choice value 'Lion'"),
    ({"close_mosaic": {"randint": [0, 1002]}}, "close_mosaic: randint value 1001"),
    ({"data": {"choice": ["x"]}}, "cannot search over data"),
])
def test_spaces_that_could_sample_an_invalid_value_are_refused(space: dict[str, Any],
                                                               message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec({**BASE, "sweep": {"space": space}})


def test_grace_period_beyond_the_epochs_and_multi_gpu_trials_are_refused() -> None:
    with pytest.raises(SpecError, match=r"grace_period \(11\) exceeds train.epochs \(10\)"):
        sweep_job(grace_period=11)
    with pytest.raises(SpecError, match="a sweep trial trains on one GPU at most"):
        sweep_job(gpus_per_trial=2)
    assert sweep_job(gpus_per_trial=0.5).sweep is not None


def test_a_sampled_value_that_would_change_on_its_way_is_a_mismatch() -> None:
    train = TrainParams()
    with pytest.raises(HyperparameterMismatch, match="close_mosaic: sampled '3', would train "
                       "with 3"):
        trial_params(train, {"close_mosaic": "3"})
    with pytest.raises(HyperparameterMismatch, match="fractional part"):
        trial_params(train, {"batch": 16.5})
    with pytest.raises(HyperparameterMismatch, match="cos_lr: sampled 1, would train with True"):
        trial_params(train, {"cos_lr": 1})
    with pytest.raises(HyperparameterMismatch, match="not hyperparameters: data"):
        trial_params(train, {"data": "/elsewhere"})
    with pytest.raises(HyperparameterMismatch, match="does not validate"):
        trial_params(train, {"lr0": 5.0})
    assert trial_params(train, {"batch": np.int64(32)}).batch == 32


@pytest.mark.parametrize(("sweep", "cluster", "expected"), [
    ({"gpus_per_trial": 1}, {"CPU": 64, "GPU": 8}, 8),
    ({"gpus_per_trial": 0.5}, {"CPU": 64, "GPU": 2}, 4),
    ({"gpus_per_trial": 1, "cpus_per_trial": 8}, {"CPU": 16, "GPU": 8}, 2),  # CPUs bind
    ({"gpus_per_trial": 0, "cpus_per_trial": 2}, {"CPU": 7}, 3),
    ({"gpus_per_trial": 0, "cpus_per_trial": 4}, {"CPU": 2}, 1),  # never below one
    ({"gpus_per_trial": 1, "trials": 3}, {"CPU": 64, "GPU": 8}, 3),  # never above trials
])
def test_default_concurrency(sweep: dict[str, Any], cluster: dict[str, float],
                             expected: int) -> None:
    params = SweepParams.model_validate({"space": {"lr0": {"uniform": [0.01, 0.02]}}, **sweep})
    assert default_concurrency(params, cluster) == expected


def test_plan_takes_the_spec_s_limit_over_the_default_and_describes_itself() -> None:
    spec = sweep_job(trials=6, max_concurrent_trials=2, gpus_per_trial=0, cpus_per_trial=1)
    plan = SweepPlan.of(spec, {"CPU": 32})
    assert (plan.concurrency, plan.max_epochs, plan.seed) == (2, 10, 0)
    assert "6 trials" in plan.describe() and "ASHA (grace 1, reduction 3, max_t 10" in (
        plan.describe())
    assert SweepPlan.of(sweep_job(trials=6, gpus_per_trial=0), {"CPU": 32}).concurrency == 6
    assert trial_resources(spec.sweep) == {"cpu": 1.0}  # type: ignore[arg-type]


def test_searchers_and_schedulers_from_the_spec() -> None:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    spec = sweep_job(searcher="optuna", scheduler="fifo")
    assert spec.sweep is not None
    tpe = searcher(spec.sweep, seed=3, concurrency=2)
    assert isinstance(tpe, OptunaSearch)
    assert tpe.set_search_properties(spec.sweep.metric, "max", param_space(spec.sweep))
    suggested = tpe.suggest("t1")
    params = trial_params(spec.train, suggested)
    assert params.batch in (8, 16, 32) and 1e-4 <= params.lr0 <= 1e-1
    assert isinstance(scheduler(spec.sweep, max_epochs=10), FIFOScheduler)
    asha = scheduler(sweep_job(grace_period=2, reduction_factor=2).sweep,  # type: ignore[arg-type]
                     max_epochs=10)
    assert isinstance(asha, ASHAScheduler)
    assert isinstance(searcher(spec.sweep.model_copy(update={"searcher": "random"}), seed=0,
                               concurrency=2), BasicVariantGenerator)
