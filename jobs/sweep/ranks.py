"""A data-parallel sweep trial (``sweep.workers_per_trial`` > 1).

The trial's own process (the Ray Tune function trainable) is rank 0: it reports every epoch to
Tune with its checkpoint, exactly as a one-process trial does, so ASHA, restores and the choice
of the best trial work unchanged. The other ranks are Ray actors the trial starts in the
bundles Tune reserved for it (:func:`jobs.sweep.space.trial_resources`: one bundle per rank).
They form one torch.distributed group (gloo on CPUs, NCCL on GPUs) through the authenticated
rendezvous of jobs/core/rendezvous.py: rank 0 opens it on its node's own address, and its
invitation (with the group's secret) reaches the other ranks only as an argument of the Ray
calls that start them; the group admits exactly the ranks of the trial's placement group,
each on the node of its bundle. Each rank runs Ultralytics' trainer as one rank of that group
(jobs/core/adapter/distributed.py); only rank 0 reports, checkpoints and writes.

The actors belong to the trial: when Tune stops or ends the trial (ASHA, a failure), Ray ends
them with it; when one of them dies, rank 0's next collective fails and the trial errors, and
Tune restarts it from its last checkpoint (with a new group and a new secret).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from jobs.core import rendezvous
from jobs.core.rendezvous import Host, Invitation
from trainforge.errors import RankGroupRefused, TrainingFailed

__all__ = ["Host", "Invitation", "join", "leave", "open_group", "start_other_ranks"]


def open_group(size: int, gpus: bool) -> Host:
    """Open the group whose rank 0 is this process (the trial's), on this node's address;
    rank ``i`` must run on the node of the trial's placement-group bundle ``i``.

    Raises:
        RankGroupRefused: this process has no placement group (a data-parallel trial has
            one).
    """
    import ray.util
    from ray.util.placement_group import get_current_placement_group, placement_group_table

    placement = get_current_placement_group()
    if placement is None:
        raise RankGroupRefused("a data-parallel trial runs in a placement group of one bundle "
                               "per rank; this process has none")
    bundles = placement_group_table(placement)["bundles_to_node_id"]
    nodes = [str(bundles[index]) for index in range(size)]
    address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    return Host(address, size=size, backend="nccl" if gpus else "gloo", nodes=nodes)


def join(invitation: Invitation, rank: int, host: Host | None = None) -> None:
    """Make this process rank ``rank`` of the group (before Ultralytics is imported).

    Raises:
        TrainingFailed: Ultralytics was already imported in this process.
        RankGroupRefused: the group did not form of its own ranks (jobs/core/rendezvous.py).
    """
    import ray

    if "ultralytics" in sys.modules:
        raise TrainingFailed("a data-parallel trial needs a fresh process: Ultralytics was "
                             "imported before the rank's environment was set")
    # Ultralytics reads these once, when it is imported; LOCAL_RANK only orders its
    # "local rank 0 first" sections, for which the global rank serves.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(invitation.size))
    # Ray shows each rank its own GPU only: it is device 0 of the process.
    rendezvous.join(invitation, rank, node=ray.get_runtime_context().get_node_id(),
                    address=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
                    host=host, device="cuda:0" if invitation.backend == "nccl" else "cpu")


def leave() -> None:
    rendezvous.leave()
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        os.environ.pop(name, None)


def start_other_ranks(invitation: Invitation, train: Callable[[int], None], *, cpus: float,
                      gpus: float) -> list[Any]:
    """Start ranks 1..size-1 as actors in the trial's bundles 1..size-1; returns the refs of
    their runs (``ray.get`` raises what a rank raised).

    Raises:
        RankGroupRefused: this process has no placement group.
    """
    import ray
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    placement = get_current_placement_group()
    if placement is None:
        raise RankGroupRefused("a data-parallel trial's ranks start in its placement group; "
                               "this process has none")
    rank_actor: Any = ray.remote(_Rank)
    runs = []
    for rank in range(1, invitation.size):
        strategy = PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=rank)
        actor = rank_actor.options(num_cpus=cpus, num_gpus=gpus,
                                   scheduling_strategy=strategy).remote()
        runs.append(actor.run.remote(invitation, rank, train))
    return runs


class _Rank:
    """A Ray actor that is one rank of a trial: join, train, leave."""

    def run(self, invitation: Invitation, rank: int, train: Callable[[int], None]) -> None:
        join(invitation, rank)
        try:
            train(rank)
        finally:
            leave()
