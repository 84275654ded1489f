"""The embedded server's warm Ray head (services/dispatcher/local_ray.py) is reachable from
this machine's loopback only, and a job on it learns nothing of another job's token.

The attacks: started with ``--node-ip-address=127.0.0.1``, the head still took the host's
external address and bound the GCS, the raylet, the agents and the metrics ports (which
answer without a token, listing job ids, the session name and the node address) to
``0.0.0.0``/``::``; and a job's runtime_env, job token included, is kept in the head's GCS,
where any other job on the head reads it (``gcs_client.get_all_job_info()``).

The real head, real jobs' way of joining it (tests/security/ray_job_probe.py), and psutil's
view of every socket the head's processes, its workers and the job listen on.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.job_env import inherited_env
from services.dispatcher.local_ray import LocalRayHead

pytestmark = pytest.mark.slow  # starts a Ray head

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tfj_the-token-of-job-a"


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayHead]:
    started = LocalRayHead(tmp_path_factory.mktemp("home"), num_cpus=2)
    try:
        yield started
    finally:
        started.stop()


def _job_env(head: LocalRayHead, **extra: str) -> dict[str, str]:
    """What the local backend gives a job on the warm head (services/dispatcher/backends)."""
    return {**inherited_env(os.environ), **head.job_env(), "TRAINFORGE_LOCAL_RAY": "1",
            "PYTHONPATH": str(REPO), **extra}


def _probe(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.security.ray_job_probe", *args],
                            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def _head_tree(head_home: Path) -> list[psutil.Process]:
    """`ray start` of this head (its temp dir is in its command line) and all it started."""
    temps = {f"--temp-dir={head_home / 'ray'}", f"--temp-dir={(head_home / 'ray').resolve()}"}
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if "start" in args and "--head" in args and temps & set(args):
            found.append(proc)
            found.extend(proc.children(recursive=True))
    return found


def _listening(pids: set[int]) -> list[tuple[str, int, str, int]]:
    """(process name, pid, address, port) of every listening TCP socket and bound UDP socket
    of ``pids``."""
    found = []
    for conn in psutil.net_connections("inet"):
        listens = conn.status == psutil.CONN_LISTEN or (conn.type.name == "SOCK_DGRAM"
                                                        and conn.laddr)
        if conn.pid in pids and listens:
            found.append((psutil.Process(conn.pid).name(), conn.pid, conn.laddr.ip,
                          conn.laddr.port))
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


@contextmanager
def _running_job(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A probe job joined to the head, its workers running; yields what it printed, then lets
    it leave (it must exit cleanly)."""
    job = _probe(env)
    try:
        assert job.stdout is not None and job.stdin is not None
        yield json.loads(job.stdout.readline())
        job.stdin.write("\n")
        job.stdin.flush()
        assert job.wait(timeout=60) == 0
    finally:
        job.kill()
        job.wait()


def test_the_head_its_workers_and_a_job_listen_on_loopback_only(head: LocalRayHead) -> None:
    with _running_job(_job_env(head)) as seen:
        assert seen["node"] == "127.0.0.1"  # not the host's external address
        tree = _head_tree(head.home)
        pids = {p.pid for p in tree} | {seen["driver"], *seen["workers"]}
        assert set(seen["workers"]) <= {p.pid for p in tree}, "workers are the head's"
        sockets = _listening(pids)
        names = {name for name, *_ in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets  # the check sees the servers
        assert seen["driver"] in {pid for _, pid, *_ in sockets}, "and the job's own"
        exposed = [s for s in sockets if not _loopback(s[2])]
        assert exposed == [], exposed
        # The metrics ports are the head's own, not Ray's fixed ones every Ray would share.
        assert not {44217, 44227} & {port for *_, port in sockets}


def test_a_job_on_the_head_cannot_read_another_jobs_token(head: LocalRayHead,
                                                           tmp_path: Path) -> None:
    # The local backend of a server with a warm head hands tokens through the store.
    assert LocalBackend(tmp_path / "state", ray_head=head).private_env is False
    assert LocalBackend(tmp_path / "state").private_env is True
    # Even a job that holds its token in its environment keeps it out of its runtime_env.
    with _running_job(_job_env(head, TRAINFORGE_JOB_TOKEN=TOKEN, TRAINFORGE_JOB_ID="j-victim")):
        out, _ = _probe(_job_env(head), "--spy").communicate(timeout=120)
        jobs = json.loads(out)
        assert any("j-victim" in info for info in jobs.values()), "the spy sees the victim"
        assert TOKEN not in out
