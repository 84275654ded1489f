"""A data-parallel sweep trial (``sweep.workers_per_trial`` > 1).

The trial's own process (the Ray Tune function trainable) is rank 0: it reports every epoch to
Tune with its checkpoint, exactly as a one-process trial does, so ASHA, restores and the choice
of the best trial work unchanged. The other ranks are Ray actors the trial starts in the
bundles Tune reserved for it (:func:`jobs.sweep.space.trial_resources`: one bundle per rank),
joined into one torch.distributed group (gloo on CPUs, NCCL on GPUs) over a TCP rendezvous at
rank 0's node. Each rank runs Ultralytics' trainer as one rank of that group
(jobs/core/adapter/distributed.py); only rank 0 reports, checkpoints and writes.

The actors belong to the trial: when Tune stops or ends the trial (ASHA, a failure), Ray ends
them with it; when one of them dies, rank 0's next collective fails and the trial errors, and
Tune restarts it from its last checkpoint.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from trainforge.errors import TrainingFailed

#: How long a rank waits for the others at the rendezvous and in each collective.
GROUP_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class Group:
    """One trial's ranks: where they meet, how many, on which device kind."""

    master: str  # host:port of rank 0's rendezvous
    size: int
    gpus: bool

    def join(self, rank: int) -> None:
        """Make this process rank ``rank`` of the group (before Ultralytics is imported).

        Raises:
            TrainingFailed: Ultralytics was already imported in this process.
        """
        import sys

        if "ultralytics" in sys.modules:
            raise TrainingFailed("a data-parallel trial needs a fresh process: Ultralytics was "
                                 "imported before the rank's environment was set")
        import torch.distributed as dist

        # Ultralytics reads these once, when it is imported; LOCAL_RANK only orders its
        # "local rank 0 first" sections, for which the global rank serves.
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(self.size))
        dist.init_process_group("nccl" if self.gpus else "gloo",
                                init_method=f"tcp://{self.master}", rank=rank,
                                world_size=self.size, timeout=GROUP_TIMEOUT)

    @staticmethod
    def leave() -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            os.environ.pop(name, None)


def rendezvous(size: int, gpus: bool) -> Group:
    """A group whose rank 0 is this process: a free port on this node's address."""
    import ray.util

    host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return Group(f"{host}:{port}", size, gpus)


def start_other_ranks(group: Group, train: Callable[[int], None], *, cpus: float,
                      gpus: float) -> list[Any]:
    """Start ranks 1..size-1 as actors in the trial's bundles 1..size-1; returns the refs of
    their runs (``ray.get`` raises what a rank raised)."""
    import ray
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    placement = get_current_placement_group()
    rank_actor: Any = ray.remote(_Rank)
    runs = []
    for rank in range(1, group.size):
        strategy = (PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=rank)
                    if placement is not None else "DEFAULT")
        actor = rank_actor.options(num_cpus=cpus, num_gpus=gpus,
                                   scheduling_strategy=strategy).remote()
        runs.append(actor.run.remote(group, rank, train))
    return runs


class _Rank:
    """A Ray actor that is one rank of a trial: join, train, leave."""

    def run(self, group: Group, rank: int, train: Callable[[int], None]) -> None:
        group.join(rank)
        try:
            train(rank)
        finally:
            group.leave()
