"""Ray Train's worker group forms through the authenticated rendezvous (jobs/train/group.py),
and that matters: Ray Train's own TorchConfig leaves rank 0's TCPStore on every interface.

A real local Ray in single-machine mode, as under ``trainforge serve`` (every Ray server on
loopback), and a real two-worker TorchTrainer (tests/security/train_group_probe.py): with
trainforge's GroupConfig every socket a worker listens on is on loopback and the group adds
up; with Ray Train's TorchConfig, rank 0 also listens on ``::`` (its TCPStore, reachable from
the network with no authentication): what docs/operations.md says Ray Train does.
The rendezvous itself is attacked in tests/security/test_rank_rendezvous.py.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # starts a Ray and a Ray Train run (no model, no training)

REPO = Path(__file__).resolve().parents[2]


def _groups(*kinds: str) -> dict[str, dict[str, Any]]:
    """Each kind's worker records by rank, the runs one after the other on one local Ray."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-m", "tests.security.train_group_probe",
                           *(arg for kind in kinds for arg in ("--group", kind))], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    groups: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(groups) == sorted(kinds), groups
    for records in groups.values():
        assert sorted(records) == ["rank-0", "rank-1"], records
    return groups


def _exposed(records: dict[str, Any]) -> list[str]:
    """Addresses some worker listens on that are not loopback."""
    found = []
    for record in records.values():
        for address in record["listening"]:
            ip = ipaddress.ip_address(address)
            if not (getattr(ip, "ipv4_mapped", None) or ip).is_loopback:
                found.append(address)
    return found


def test_ray_trains_group_forms_through_the_rendezvous_on_loopback_only() -> None:
    groups = _groups("trainforge", "ray")
    ours = groups["trainforge"]
    assert all(r["size"] == 2 and r["sum"] == 3.0 for r in ours.values()), ours
    assert _exposed(ours) == []
    # Ray Train's own rendezvous, the same machine and Ray: rank 0's store on every interface.
    theirs = groups["ray"]
    assert all(r["sum"] == 3.0 for r in theirs.values()), theirs
    assert _exposed(theirs), theirs
