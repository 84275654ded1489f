"""The rendezvous of data-parallel ranks lets in the group's own ranks only
(jobs/core/rendezvous.py; jobs/sweep/ranks.py and Ray Train's group in jobs/train/group.py use it).

The attack: torch's rendezvous (a TCPStore on every interface, no authentication, on a port
bound, closed and bound again) let a foreign process on the node join a sweep trial's group as
rank 1 through 127.0.0.1 and add its own values to rank 0's ``all_reduce``. Each process here
is a real one (tests/security/rank_probe.py) talking over real sockets; the invitation, which
Ray hands to the ranks in the service, goes through the test's pipes. No Ray, no training.
"""

from __future__ import annotations

import ipaddress
import json
import select
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.slow  # real torch.distributed processes

REPO = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.1"  # the node's own address here; never all interfaces
NODES = ["node-a", "node-b"]


class Probe:
    """One rank_probe process: a JSON job in, JSON lines out."""

    def __init__(self, **job: Any) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.security.rank_probe"],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.send(json.dumps(job))

    def send(self, line: str = "") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self, timeout_s: float = 90) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        assert ready, f"pid {self.proc.pid} said nothing within {timeout_s}s"
        line = self.proc.stdout.readline()
        assert line, f"pid {self.proc.pid} exited with {self.proc.wait()}"
        answer: dict[str, Any] = json.loads(line)
        return answer


@contextmanager
def probes() -> Iterator[list[Probe]]:
    started: list[Probe] = []
    try:
        yield started
    finally:
        for probe in started:
            probe.proc.kill()
            probe.proc.wait()


def _rank0(started: list[Probe], timeout_s: float = 60, **extra: Any) -> tuple[Probe, dict[str,
                                                                                     Any]]:
    rank0 = Probe(role="rank", rank=0, node=NODES[0], address=ADDRESS, size=len(NODES),
                  nodes=NODES, timeout_s=timeout_s, value=1.0, **extra)
    started.append(rank0)
    return rank0, rank0.read()["invitation"]


def _listening(pid: int) -> list[str]:
    return [c.laddr.ip for c in psutil.Process(pid).net_connections("inet")
            if c.status == psutil.CONN_LISTEN]


def test_the_groups_own_ranks_meet_on_the_nodes_address_and_add_up() -> None:
    with probes() as started:
        rank0, invitation = _rank0(started)
        assert invitation["address"].startswith(f"{ADDRESS}:")
        rank1 = Probe(role="rank", rank=1, node=NODES[1], address=ADDRESS, timeout_s=60,
                      invitation=invitation, value=2.0)
        started.append(rank1)
        assert rank0.read() == {"joined": True} and rank1.read() == {"joined": True}
        for probe in (rank0, rank1):  # the store, gloo's listeners: this address only
            addresses = _listening(probe.proc.pid)
            assert addresses and all(ipaddress.ip_address(a) == ipaddress.ip_address(ADDRESS)
                                     for a in addresses), addresses
        rank0.send()
        rank1.send()
        assert rank0.read() == {"sum": 3.0} and rank1.read() == {"sum": 3.0}


def test_a_foreign_process_joining_with_torchs_rendezvous_gets_nothing_in() -> None:
    with probes() as started:
        rank0, invitation = _rank0(started, timeout_s=5)
        foreign = Probe(role="foreign-torch", address=invitation["address"], rank=1, size=2,
                        value=1000.0, timeout_s=8)
        started.append(foreign)
        refused = rank0.read()
        assert refused["code"] == "rank_group_refused", refused
        assert "rank 1 did not check in" in refused["refused"]
        assert foreign.read()["joined"] is False
        assert rank0.proc.wait(timeout=30) == 0  # it never summed anything


def test_a_foreign_write_to_the_rendezvous_refuses_the_group_and_reads_nothing() -> None:
    with probes() as started:
        rank0, invitation = _rank0(started)
        forged = json.dumps({"node": NODES[1], "nonce": "0" * 32, "pid": 1})
        writer = Probe(role="foreign-writer", address=invitation["address"], key="member/1",
                       value=forged, timeout_s=30)
        started.append(writer)
        seen = writer.read()
        assert "member/0" in seen["keys"], seen  # it can list the store ...
        assert seen["plain"] == []  # ... but read nothing in it
        refused = rank0.read()
        assert refused["code"] == "rank_group_refused"
        assert refused["refused"] == (
            "the value of 'member/1' in the group's rendezvous was not written by one of its "
            "ranks (another process wrote to it); the group is refused")


def test_a_rank_off_its_placement_group_bundle_is_refused() -> None:
    with probes() as started:
        rank0, invitation = _rank0(started)
        elsewhere = Probe(role="rank", rank=1, node="node-c", address=ADDRESS, timeout_s=60,
                          invitation=invitation, value=2.0)
        started.append(elsewhere)
        why = ("rank 1 checked in from node 'node-c', not from the node its placement-group "
               "bundle is on ('node-b')")
        assert rank0.read()["refused"] == why
        assert elsewhere.read()["refused"] == why


def test_a_rank_claimed_twice_is_admitted_once() -> None:
    with probes() as started:
        rank0, invitation = _rank0(started)
        twins = [Probe(role="rank", rank=1, node=NODES[1], address=ADDRESS, timeout_s=60,
                       invitation=invitation, value=2.0) for _ in range(2)]
        started.extend(twins)
        answers = [twin.read() for twin in twins]
        assert sorted(answers, key=str) == sorted(
            [{"joined": True}, {"refused": "rank 1 of the group was admitted for another "
              "process: two processes checked in as that rank; this one leaves",
              "code": "rank_group_refused"}], key=str), answers
        assert rank0.read() == {"joined": True}
        member = twins[answers.index({"joined": True})]
        rank0.send()
        member.send()
        assert rank0.read() == {"sum": 3.0} and member.read() == {"sum": 3.0}


def test_the_proof_finds_a_member_without_the_secret() -> None:
    """A process that got onto a connection of a group (racing a rank to gloo's listener)
    holds no secret: the proof every rank runs before training refuses the group (that it
    passes among the group's own ranks, the first test shows)."""
    from tests.fixtures.network import free_port

    address = f"{ADDRESS}:{free_port()}"
    with probes() as started:
        for rank, secret in enumerate(["aa" * 32, "bb" * 32]):
            started.append(Probe(role="prover", rank=rank, size=2, address=address,
                                 secret=secret, timeout_s=30))
        answers = [probe.read() for probe in started]
    assert all("does not hold the group's secret" in a["refused"] for a in answers), answers
