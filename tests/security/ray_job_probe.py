"""A stand-in job for tests/security/test_warm_ray_head.py: it joins the Ray in RAY_ADDRESS
the way every job does (jobs/core/ray_cluster.py ``connect``), then

- by default starts a task and an actor (so the head has worker processes), prints one JSON
  line (its pid, the workers' pids, the node address Ray gave it) and waits for a line on
  stdin before it leaves;
- with ``--spy``, prints what Ray tells any driver of the head about the other jobs
  (``gcs_client.get_all_job_info()``, their runtime_env included) and leaves.
"""

from __future__ import annotations

import json
import os
import sys

import ray

from jobs.core.ray_cluster import connect
from trainforge.spec import Resources


@ray.remote
def _where() -> tuple[int, str]:
    return os.getpid(), str(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]


@ray.remote
class _Actor:
    def pid(self) -> int:
        return os.getpid()


def main() -> None:
    connect(Resources(workers=1, cpus=1, gpus_per_worker=0))
    if "--spy" in sys.argv:
        worker = ray._private.worker.global_worker  # type: ignore[attr-defined]
        print(json.dumps({str(k): str(v) for k, v in
                          worker.gcs_client.get_all_job_info().items()}), flush=True)
        return
    actor = _Actor.remote()  # type: ignore[attr-defined]
    task_pid, node = ray.get(_where.remote())
    print(json.dumps({"driver": os.getpid(), "workers": [task_pid, ray.get(actor.pid.remote())],
                      "node": node}), flush=True)
    sys.stdin.readline()


if __name__ == "__main__":
    main()
