"""What the fault-tolerance tests share: killing a job's processes at an epoch, and saying
why a run failed."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from tests.fixtures.training import RayHead, RecordingAPI


class KillAfterEpoch:
    """Kills a job's training worker (or the process ``pid`` names) once it has reported
    ``epoch`` (once per job)."""

    def __init__(self, api: RecordingAPI, job_id: str, epoch: int,
                 pid: Callable[[], int] | None = None) -> None:
        self.api, self.job_id, self.epoch = api, job_id, epoch
        self.pid = pid or self._worker_pid
        self.killed: list[int] = []
        self.done = threading.Event()

    def _worker_pid(self) -> int:
        [*_, started] = self.api.message(self.job_id, "training worker started")
        return int(started["data"]["pid"])

    def __call__(self, job_id: str, event: dict[str, Any]) -> None:
        if job_id != self.job_id or self.done.is_set():
            return
        if event["type"] == "progress" and event["epoch"] == self.epoch:
            pid = self.pid()
            os.kill(pid, signal.SIGKILL)
            self.killed.append(pid)
            self.done.set()


def explain(run_output: str, ray_head: RayHead) -> str:
    import psutil

    memory = psutil.virtual_memory()
    rays = [" ".join(p.info["cmdline"] or [])[:160] for p in psutil.process_iter(["cmdline"])
            if "ray" in " ".join(p.info["cmdline"] or [])]
    return (f"job output:\n{run_output[-5000:]}\n--- Ray's logs, telling lines:\n"
            f"{ray_head.log_digest()}\n--- memory: {memory.percent}% used, "
            f"{memory.available >> 20} MiB available; {len(rays)} Ray processes:\n"
            + "\n".join(rays[:40]))
