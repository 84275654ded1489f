"""Ray Train's worker group, formed through the authenticated rendezvous of
jobs/core/rendezvous.py.

Ray Train's own ``TorchConfig`` (ray/train/torch/config.py, ``_TorchBackend.on_start``) forms
the group the way the rendezvous exists to avoid: worker 0 finds a free port by binding a
socket and closing it (``get_address_and_port``), then every worker calls
``init_process_group`` with ``env://`` on it, a TCPStore that listens on every interface
without authentication (tests/security/test_train_group.py shows it). :class:`GroupConfig` is
Ray Train's ``TorchConfig`` with that one step replaced: worker 0 opens the group on its
node's own address, Ray Train's controller hands the invitation (with the group's secret) to
every worker as the argument of a Ray call, and each worker must run on the node Ray placed
it on (its bundle of the worker group's placement group) before the group forms. Everything
else (the per-worker environment, CUDA devices, shutdown) stays Ray Train's. A group of one
worker forms no process group at all, so nothing listens.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ray.train.torch.config import (  # private names of the pinned Ray (Dockerfile.train)
    TorchConfig,
    _set_torch_distributed_env_vars,
    _TorchBackend,
)

from jobs.core import rendezvous
from trainforge.errors import RankGroupRefused

#: Worker 0's open group, from the call that opens it to the call that joins it (one process).
_open_groups: dict[str, rendezvous.Host] = {}


def _open(size: int, backend: str, nodes: list[str], timeout_s: int) -> rendezvous.Invitation:
    """In worker 0: open the group on this node's address; returns its invitation."""
    import ray.util

    address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
    host = rendezvous.Host(address, size=size, backend=backend, nodes=nodes,
                           timeout=timedelta(seconds=timeout_s))
    _open_groups[host.invitation.address] = host
    return host.invitation


def _join(invitation: rendezvous.Invitation, rank: int, timeout_s: int) -> None:
    """In every worker: join the group as ``rank``."""
    import ray
    from ray.train.torch import get_device

    host = _open_groups.pop(invitation.address, None) if rank == 0 else None
    device = str(get_device()) if invitation.backend == "nccl" else "cpu"
    rendezvous.join(invitation, rank, node=ray.get_runtime_context().get_node_id(),
                    address=ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
                    host=host, device=device, timeout=timedelta(seconds=timeout_s))


class _GroupBackend(_TorchBackend):
    """Ray Train's torch backend, with the process group formed by the rendezvous."""

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        get_workers = getattr(worker_group, "get_workers", None)
        if get_workers is None:
            raise RankGroupRefused("trainforge forms Ray Train's worker group through Ray Train "
                                   "v2 only (RAY_TRAIN_V2_ENABLED must not be 0)")
        worker_group.execute(_set_torch_distributed_env_vars)
        workers = get_workers()
        if len(workers) < 2:
            return  # one rank: no group, nothing to listen for
        import ray

        size, timeout_s = len(workers), int(backend_config.timeout_s)
        nodes = [str(worker.metadata.node_id) for worker in workers]
        invitation = worker_group.execute_single(0, _open, size, backend_config.backend, nodes,
                                                 timeout_s)
        ray.get([worker_group.execute_single_async(rank, _join, invitation, rank, timeout_s)
                 for rank in range(size)])


@dataclass
class GroupConfig(TorchConfig):
    """Ray Train's ``TorchConfig`` whose workers form their group through the rendezvous."""

    @property
    def backend_cls(self) -> type[_GroupBackend]:
        return _GroupBackend
