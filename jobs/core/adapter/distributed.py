"""Ultralytics' own trainer as one rank of a process group that Ray Train set up.

Ultralytics trains on several GPUs by spawning ranks of its own (``BaseTrainer.train`` runs
``torchrun`` through ``utils/dist.py``'s ``generate_ddp_command``) and then creating the
process group in each (``BaseTrainer._setup_ddp``). In a Ray Train worker the ranks already
exist: Ray Train started one process per worker, set ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``
and initialised ``torch.distributed`` (NCCL on GPUs, gloo on CPUs). :func:`trainer_class`
returns Ultralytics' detection trainer with four small changes, and nothing else of it
replaced:

1. it never spawns: ``ddp`` is off and ``world_size`` is the group's size, so Ultralytics' own
   DDP code paths run as in one of its torchrun ranks: the global ``batch`` split across
   ranks, a ``DistributedSampler`` per rank, gradients all-reduced, ``stop`` broadcast from
   rank 0, only rank 0 writing checkpoints, plots and results.csv;
2. ``_setup_ddp`` adopts the existing group and the device Ray Train gave the rank instead of
   creating a group;
3. on CPUs, Ultralytics wraps the model in ``DistributedDataParallel(device_ids=[index])``,
   which torch refuses for a CPU module (its index is None): while ``_setup_train`` runs, the
   wrapper is given ``device_ids=None`` there;
4. ``final_eval`` validates best.pt on rank 0 alone (under :func:`single_process`):
   Ultralytics would validate it on every rank and gather on rank 0, but best.pt exists only
   where rank 0 saved it (the other ranks skip it, as Ultralytics' code already does for a
   rank without the file).

Ultralytics reads ``RANK`` and ``LOCAL_RANK`` once, when ``ultralytics.utils`` is imported:
:func:`check_rank_constants` refuses to train in a process that imported it before Ray Train
set them. That evaluation after training runs on rank 0 alone, while the other ranks have
left: :func:`single_process` makes Ultralytics' validator act as the one process it then is
(no gather from other ranks, no barrier).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from typing import Any

from trainforge.errors import TrainingFailed


def world_size() -> int:
    """Ranks of this process's torch.distributed group (1 when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_world_size())
    return 1


def world_rank() -> int:
    """This process's rank in its group (0 when there is none)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return 0


def all_gather(value: Any) -> list[Any]:
    """``value`` of every rank of this process's group, in rank order (``[value]`` without
    a group)."""
    size = world_size()
    if size == 1:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * size
    dist.all_gather_object(gathered, value)
    return gathered


def check_rank_constants() -> None:
    """Ultralytics' import-time ``RANK``/``LOCAL_RANK`` must be this rank's.

    Raises:
        TrainingFailed: Ultralytics was imported before the rank's environment was set.
    """
    import ultralytics.utils as ul

    want = (int(os.environ.get("RANK", "-1")), int(os.environ.get("LOCAL_RANK", "-1")))
    if (ul.RANK, ul.LOCAL_RANK) != want:
        raise TrainingFailed(
            f"this training process imported Ultralytics as rank {ul.RANK} (local "
            f"{ul.LOCAL_RANK}) but is rank {want[0]} (local {want[1]}) of {world_size()}: "
            "Ultralytics must be imported after Ray Train sets RANK and LOCAL_RANK")


@cache
def trainer_class() -> type[Any]:
    """Ultralytics' ``DetectionTrainer``, adapted to run as one rank of an existing group."""
    import torch
    import torch.distributed as dist
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import RANK

    class RankTrainer(DetectionTrainer):
        """One rank of a data-parallel run whose process group already exists."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.ddp = False  # (1) the ranks exist: never spawn torchrun
            self.world_size = dist.get_world_size()

        def _setup_ddp(self) -> None:  # (2) the group exists: adopt it
            self.device = torch.device(self.args.device if self.args.device == "cpu"
                                       else f"cuda:{self.args.device}")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)

        def _setup_train(self) -> None:
            with _cpu_ddp_device_ids(self.device.type == "cpu"):  # (3)
                super()._setup_train()  # type: ignore[no-untyped-call]

        def final_eval(self) -> None:  # (4)
            with single_process() if RANK == 0 else contextlib.nullcontext():
                super().final_eval()  # type: ignore[no-untyped-call]

    return RankTrainer


@contextlib.contextmanager
def _cpu_ddp_device_ids(on_cpu: bool) -> Iterator[None]:
    """While Ultralytics wraps a CPU model, build ``DistributedDataParallel`` without the
    ``device_ids=[None]`` it passes (torch only takes device ids for GPU modules)."""
    if not on_cpu:
        yield
        return
    from torch.nn import parallel

    ddp = parallel.DistributedDataParallel

    class CpuDistributedDataParallel(ddp):  # type: ignore[misc, valid-type]
        def __init__(self, module: Any, device_ids: Any = None, **kwargs: Any) -> None:
            super().__init__(module, device_ids=None, **kwargs)

    parallel.DistributedDataParallel = CpuDistributedDataParallel  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        parallel.DistributedDataParallel = ddp  # type: ignore[misc]


#: Ultralytics' validation modules that imported RANK and LOCAL_RANK by name.
_VALIDATION_MODULES = ("ultralytics.engine.validator", "ultralytics.models.yolo.detect.val")


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Within it, Ultralytics' validator runs as a single process (RANK -1) even in a rank of
    a group: the evaluation after a data-parallel run is rank 0's alone."""
    if world_size() == 1:
        yield
        return
    import importlib

    modules = [importlib.import_module(name) for name in _VALIDATION_MODULES]
    saved = [(m.RANK, m.LOCAL_RANK) for m in modules]
    for module in modules:
        module.RANK = module.LOCAL_RANK = -1  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, (rank, local_rank) in zip(modules, saved, strict=True):
            module.RANK, module.LOCAL_RANK = rank, local_rank  # type: ignore[attr-defined]
