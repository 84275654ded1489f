"""One process at a data-parallel rendezvous, for tests/security/test_rank_rendezvous.py: a rank
of the group (jobs/core/rendezvous.py, as jobs/sweep/ranks.py and jobs/train/group.py use it),
or a foreign process trying to get in. Reads one JSON job from stdin, writes JSON lines to
stdout; a rank that joined waits for one more stdin line before its ``all_reduce``.

Roles:

- ``rank``: rank 0 (no ``invitation``: it opens the group and prints its invitation first)
  or another rank (given the invitation, as Ray would hand it over); joins, then adds
  ``value`` to the group's ``all_reduce`` and prints the sum.
- ``foreign-torch``: torch's own rendezvous against the group's address, as rank ``rank``
  (the original attack: it poisoned rank 0's ``all_reduce``).
- ``foreign-writer``: a plain client of the group's store: lists and reads every key, then
  writes ``value`` under ``key``.
- ``prover``: a member of a group formed without the sealed rendezvous that runs the proof
  with ``secret`` (a process that got onto a connection of the group without the secret).
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from jobs.core import rendezvous
from trainforge.errors import RankGroupRefused


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _sum(value: float) -> float:
    tensor = torch.tensor([value])
    dist.all_reduce(tensor)
    return float(tensor.item())


def rank(job: dict[str, Any]) -> None:
    timeout = timedelta(seconds=job["timeout_s"])
    host = None
    if job.get("invitation") is None:
        host = rendezvous.Host(job["address"], size=job["size"], backend="gloo",
                               nodes=job["nodes"], timeout=timeout)
        invitation = host.invitation
        say(invitation={"address": invitation.address, "size": invitation.size,
                        "nodes": list(invitation.nodes), "secret": invitation.secret.hex()})
    else:
        given = job["invitation"]
        invitation = rendezvous.Invitation(given["address"], given["size"], "gloo",
                                           tuple(given["nodes"]), bytes.fromhex(given["secret"]))
    try:
        rendezvous.join(invitation, job["rank"], node=job["node"], address=job["address"],
                        host=host, timeout=timeout)
    except RankGroupRefused as refused:
        say(refused=refused.message, code=refused.code)
        return
    say(joined=True)
    sys.stdin.readline()
    say(sum=_sum(job["value"]))
    rendezvous.leave()


def foreign_torch(job: dict[str, Any]) -> None:
    try:
        dist.init_process_group("gloo", init_method=f"tcp://{job['address']}", rank=job["rank"],
                                world_size=job["size"],
                                timeout=timedelta(seconds=job["timeout_s"]))
        say(joined=True, sum=_sum(job["value"]))
    except Exception as exc:
        say(joined=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")


def foreign_writer(job: dict[str, Any]) -> None:
    host, _, port = job["address"].rpartition(":")
    store = dist.TCPStore(host, int(port), None, False, timedelta(seconds=job["timeout_s"]),
                          wait_for_workers=False)
    keys = sorted(store.list_keys())
    plain = []
    for key in keys:
        try:
            plain.append(json.loads(store.get(key)))
        except ValueError:
            continue
    store.set(job["key"], job["value"])
    say(keys=keys, plain=plain)


def prover(job: dict[str, Any]) -> None:
    host, _, port = job["address"].rpartition(":")
    timeout = timedelta(seconds=job["timeout_s"])
    store = dist.TCPStore(host, int(port), job["size"], job["rank"] == 0, timeout)
    dist.init_process_group("gloo", store=store, rank=job["rank"], world_size=job["size"],
                            timeout=timeout)
    try:
        rendezvous._prove(bytes.fromhex(job["secret"]), "nonce", job["rank"], job["size"],
                          "cpu")
        say(proven=True)
    except RankGroupRefused as refused:
        say(refused=refused.message)
    finally:
        rendezvous.leave()


if __name__ == "__main__":
    task = json.loads(sys.stdin.readline())
    {"rank": rank, "foreign-torch": foreign_torch, "foreign-writer": foreign_writer,
     "prover": prover}[task["role"]](task)
