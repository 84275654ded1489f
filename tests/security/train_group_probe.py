"""Ray Train's worker group, as a job forms it, for tests/security/test_train_group.py: a local
Ray in single-machine mode (every Ray server on loopback, as under ``trainforge serve``), then a
two-worker TorchTrainer whose loop records, per worker, what it listens on and the sum of an
``all_reduce``. ``--group trainforge`` uses jobs/train/group.py's GroupConfig, ``--group ray``
Ray Train's own TorchConfig; given both, the runs share one Ray, one after the other (each forms
a new group of new worker processes). Prints one JSON object: per group, the workers' records
by rank.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import psutil


def _loop(config: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist
    from ray import train

    rank = train.get_context().get_world_rank()
    tensor = torch.tensor([float(rank + 1)])
    dist.all_reduce(tensor)
    listening = sorted({c.laddr.ip for c in psutil.Process().net_connections("inet")
                        if c.status == psutil.CONN_LISTEN})
    record = {"rank": rank, "size": dist.get_world_size(), "sum": tensor.item(),
              "listening": listening}
    Path(config["out"], f"rank-{rank}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--group", choices=["trainforge", "ray"], action="append",
                        required=True)
    args = parser.parse_args()
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from jobs.train.group import GroupConfig

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    groups = {}
    for group in args.group:
        with tempfile.TemporaryDirectory() as out:
            TorchTrainer(
                _loop, train_loop_config={"out": out},
                torch_config=GroupConfig() if group == "trainforge" else TorchConfig(),
                scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                run_config=RunConfig(storage_path=os.path.join(out, "ray"), name="probe"),
            ).fit()
            groups[group] = {p.stem: json.loads(p.read_text())
                             for p in Path(out).glob("rank-*.json")}
    print(json.dumps(groups), flush=True)


if __name__ == "__main__":
    main()
