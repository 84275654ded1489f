"""An authenticated rendezvous for a data-parallel group of ranks (torch.distributed).

torch's own rendezvous (``init_method="tcp://…"`` or ``env://``, which Ray Train uses too) is a
TCPStore on every interface, without authentication, on a port found by binding a socket and
closing it (another process may take the port in between). Whoever reaches it can list, read
and write its keys (``list_keys`` included): join the group as any rank, or stand between two
ranks by rewriting the addresses through which gloo and NCCL connect them. A foreign process
on one node joined a trial's group as rank 1 that way and added its own values to rank 0's
``all_reduce``. Here, instead:

1. **The port is never free.** Rank 0 binds its listening socket to its node's own address
   (never all interfaces), port 0, and the TCPStore serves on that very socket
   (``master_listen_fd``).
2. **Only the group reads and writes.** Every value in the store is sealed (AES-GCM, bound to
   its key) under a secret rank 0 makes for this one group and hands to each rank through Ray
   (the :class:`Invitation` is an argument of the call that makes a process a rank), never
   through the environment, a file or a log. Another process may still connect: what it
   reads is noise (gloo's and NCCL's addresses and NCCL's unique id included), and anything
   it writes fails to open, which refuses the group (:class:`RankGroupRefused`).
3. **Exactly the expected ranks.** Before the process group forms, each rank checks in with
   the node it runs on and a nonce of its own; rank 0 admits the group only if every rank is
   on the node its placement-group bundle was placed on, and each rank checks that the nonce
   rank 0 admitted for it is its own (a second holder of the secret claiming the same rank is
   refused).
4. **The connections are the ranks'.** gloo and NCCL listen on the interface of the node's
   address (``GLOO_SOCKET_IFNAME``/``NCCL_SOCKET_IFNAME``, unless the operator set them). A
   process that finds such a socket and races a rank to it cannot learn the secret: once the
   group has formed, every rank proves over the group's own connections that it holds the
   secret (an ``all_gather`` of HMACs, tensors only, never a pickle), before any training data
   or pickled object crosses a connection.

This module knows no Ray: its callers (jobs/sweep/ranks.py, jobs/train/group.py) say which node
a process runs on and which node each rank must run on.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from trainforge.errors import RankGroupRefused

log = logging.getLogger(__name__)

#: How long a rank waits for the others at the rendezvous, and in each collective after it.
GROUP_TIMEOUT = timedelta(minutes=30)
#: How long the proof over the group's connections may take once every rank has joined.
PROOF_TIMEOUT = timedelta(minutes=2)
#: Sealed values start with this (a version: another format is another prefix).
_SEALED = b"tfs1"
_NONCE_BYTES = 12
#: Where torch's own keys go inside the store, beside the check-in records.
_TORCH_PREFIX = "pg"


@dataclass(frozen=True)
class Invitation:
    """What a process needs to join one group as one of its ranks; plain data, so Ray ships it
    (and only Ray: it holds the group's secret).

    Attributes:
        address: ``host:port`` of rank 0's store, on rank 0's node address.
        size: the number of ranks.
        backend: ``gloo`` (CPUs) or ``nccl`` (GPUs).
        nodes: the node each rank must run on (its placement-group bundle's), by rank.
        secret: the group's secret (never in a repr).
    """

    address: str
    size: int
    backend: str
    nodes: tuple[str, ...]
    secret: bytes = field(repr=False)


def _key(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, b"trainforge-rendezvous:" + purpose, hashlib.sha256).digest()


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class Host:
    """Rank 0's listening socket and store, from the moment its port is chosen until the
    group ends (the process group then holds the store).

    Args:
        address: this node's own address (never ``0.0.0.0``).
        size, backend, nodes: the group (see :class:`Invitation`).
        timeout: how long store operations wait.

    Raises:
        RankGroupRefused: ``address`` is not an address of one of this machine's interfaces, or
            ``nodes`` does not name a node for every rank.
    """

    def __init__(self, address: str, *, size: int, backend: str, nodes: Sequence[str],
                 timeout: timedelta = GROUP_TIMEOUT) -> None:
        from torch.distributed import TCPStore  # type: ignore[attr-defined]  # not in stubs

        if len(nodes) != size:
            raise RankGroupRefused(f"a group of {size} ranks needs the node of each of them "
                               f"(placement-group bundles), got {len(nodes)}")
        ip = ipaddress.ip_address(address)
        if ip.is_unspecified:
            raise RankGroupRefused(f"rank 0 must listen on its node's address, not on {address}")
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.bind((address, 0))
            listener.listen(128)
            port = int(listener.getsockname()[1])
            self.store = TCPStore(address, port, None, True, timeout, wait_for_workers=False,
                                  master_listen_fd=listener.fileno(), use_libuv=True)
        except BaseException:
            listener.close()
            raise
        listener.detach()  # the store serves on it, and closes it when it ends
        shown = f"[{address}]" if ip.version == 6 else address
        self.invitation = Invitation(f"{shown}:{port}", size, backend, tuple(nodes),
                                     secrets.token_bytes(32))


def sealed_store(inner: Any, secret: bytes, timeout: timedelta) -> Any:
    """A torch ``Store`` over ``inner`` whose values only the holders of the group's secret can
    read or write: sealed with AES-GCM, the key as associated data (a value moved to another
    key does not open there). A value that does not open raises :class:`RankGroupRefused` and is
    remembered in the store's ``refusal`` (torch re-raises a store's error as its own).
    Counters (``add``) stay plain: torch counts with them and carries no data in them, so a
    foreign writer can at most make a count wrong, which fails the group.

    Built here, not at import: a subclass of torch's ``Store`` needs torch imported.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from torch.distributed.distributed_c10d import Store

    # Any: the methods below take what torch's C++ side passes, wider than its stubs say.
    base: Any = Store

    class SealedStore(base):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.set_timeout(timeout)
            self.refusal: str | None = None

        def _seal(self, key: str, value: bytes) -> bytes:
            nonce = os.urandom(_NONCE_BYTES)
            return _SEALED + nonce + aead.encrypt(nonce, value, key.encode())

        def _open(self, key: str, sealed: bytes) -> bytes:
            from cryptography.exceptions import InvalidTag

            body = sealed[len(_SEALED):]
            try:
                if not sealed.startswith(_SEALED):
                    raise InvalidTag
                return bytes(aead.decrypt(body[:_NONCE_BYTES], body[_NONCE_BYTES:],
                                          key.encode()))
            except (InvalidTag, ValueError):
                self.refusal = (f"the value of {key!r} in the group's rendezvous was not "
                                "written by one of its ranks (another process wrote to "
                                "it); the group is refused")
                raise RankGroupRefused(self.refusal) from None

        def set(self, key: str, value: Any) -> None:
            data = value if isinstance(value, bytes) else bytes(value, "utf-8") \
                if isinstance(value, str) else bytes(value)
            inner.set(key, self._seal(key, data))

        def get(self, key: str) -> bytes:
            return self._open(key, bytes(inner.get(key)))

        def multi_get(self, keys: list[str]) -> list[bytes]:
            return [self.get(k) for k in keys]

        def multi_set(self, keys: list[str], values: list[Any]) -> None:
            for key, value in zip(keys, values, strict=True):
                self.set(key, value)

        def add(self, key: str, amount: int) -> int:
            return int(inner.add(key, amount))

        def wait(self, keys: list[str], timeout: timedelta | None = None) -> None:
            inner.wait(keys, timeout if timeout is not None else self.timeout)

        def check(self, keys: list[str]) -> bool:
            return bool(inner.check(keys))

        def delete_key(self, key: str) -> bool:
            return bool(inner.delete_key(key))

        def num_keys(self) -> int:
            return int(inner.num_keys())

        def compare_set(self, key: str, expected: Any, desired: Any) -> bytes:
            raise RankGroupRefused("compare_set is not part of the sealed rendezvous (gloo and "
                               "NCCL do not use it)")

    aead = AESGCM(_key(secret, b"seal"))
    return SealedStore()


def interface_of(address: str) -> str | None:
    """The name of this machine's network interface that has ``address``, or None."""
    import psutil  # type: ignore[import-untyped]  # with Ray and torch

    wanted = ipaddress.ip_address(address)
    for name, addresses in psutil.net_if_addrs().items():
        for entry in addresses:
            try:
                if ipaddress.ip_address(entry.address.split("%")[0]) == wanted:
                    return str(name)
            except ValueError:
                continue  # a MAC address
    return None


def _bind_to(address: str) -> None:
    """gloo and NCCL listen on the interface of ``address`` (an operator's choice stands)."""
    name = interface_of(address)
    if name is None:
        raise RankGroupRefused(f"no network interface of this machine has the address {address} "
                           "that Ray gives this node; set GLOO_SOCKET_IFNAME (gloo) or "
                           "NCCL_SOCKET_IFNAME (NCCL) to the interface the ranks should use")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", name)
    os.environ.setdefault("NCCL_SOCKET_IFNAME", name)


def join(invitation: Invitation, rank: int, *, node: str, address: str,
         host: Host | None = None, device: str = "cpu",
         timeout: timedelta = GROUP_TIMEOUT) -> None:
    """Make this process rank ``rank`` of the invited group: check in, be admitted, form the
    process group, prove the group's connections.

    Args:
        invitation: the group (from rank 0's :class:`Host`, through Ray).
        rank: 0 .. size-1; rank 0 passes its ``host``.
        node: the node this process runs on (Ray's node id).
        address: this node's own address (gloo and NCCL listen on its interface).
        device: where the proof's tensors live (``cpu`` for gloo, this rank's ``cuda:N``).
        timeout: how long to wait for the other ranks, and each collective's timeout.

    Raises:
        RankGroupRefused: see the class; the process is left without a group.
    """
    import torch.distributed as dist
    from torch.distributed import TCPStore  # type: ignore[attr-defined]  # not in stubs
    from torch.distributed.distributed_c10d import PrefixStore

    if not 0 <= rank < invitation.size:
        raise RankGroupRefused(f"rank {rank} is not a rank of a group of {invitation.size}")
    if (rank == 0) != (host is not None):
        raise RankGroupRefused("rank 0, and only rank 0, joins with the group's Host")
    _bind_to(address)
    ip, port = _host_port(invitation.address)
    inner = host.store if host is not None else TCPStore(
        ip, port, None, False, timeout, wait_for_workers=False, use_libuv=True)
    sealed = sealed_store(inner, invitation.secret, timeout)
    try:
        proof_nonce = _check_in(sealed, invitation, rank, node, timeout)
        dist.init_process_group(invitation.backend, store=PrefixStore(_TORCH_PREFIX, sealed),
                                rank=rank, world_size=invitation.size, timeout=timeout)
        _prove(invitation.secret, proof_nonce, rank, invitation.size, device)
    except RankGroupRefused:
        leave()
        raise
    except Exception as exc:
        leave()
        why = sealed.refusal or f"{type(exc).__name__}: {_first_line(exc)}"
        raise RankGroupRefused(f"rank {rank} could not join its group: {why}") from None
    log.info("rank %d of %d joined its group at %s (%s)", rank, invitation.size,
             invitation.address, invitation.backend)


def _check_in(sealed: Any, invitation: Invitation, rank: int, node: str,
              timeout: timedelta) -> str:
    """Record this rank, let rank 0 admit the group; returns the group's proof nonce.

    Raises:
        RankGroupRefused: rank 0 refused the group, or admitted another process as this rank.
    """
    mine = secrets.token_hex(16)
    sealed.set(f"member/{rank}", json.dumps({"node": node, "nonce": mine, "pid": os.getpid()}))
    if rank == 0:
        verdict = _admit(sealed, invitation, timeout)
        sealed.set("verdict", json.dumps(verdict))
    else:
        try:
            sealed.wait(["verdict"], timeout)
        except RankGroupRefused:
            raise
        except Exception as exc:
            raise RankGroupRefused(f"rank {rank}: rank 0 did not admit the group within "
                               f"{timeout} ({_first_line(exc)})") from None
        verdict = json.loads(sealed.get("verdict"))
    if "refused" in verdict:
        raise RankGroupRefused(str(verdict["refused"]))
    if verdict["admitted"].get(str(rank)) != mine:
        raise RankGroupRefused(f"rank {rank} of the group was admitted for another process: two "
                           "processes checked in as that rank; this one leaves")
    return str(verdict["proof"])


def _admit(sealed: Any, invitation: Invitation, timeout: timedelta) -> dict[str, Any]:
    """Rank 0: the verdict on the group, once every rank checked in (or the first reason not
    to admit it)."""
    admitted: dict[str, str] = {}
    for rank, expected in enumerate(invitation.nodes):
        try:
            sealed.wait([f"member/{rank}"], timeout)
            record = json.loads(sealed.get(f"member/{rank}"))
        except RankGroupRefused as refused:
            return {"refused": refused.message}
        except Exception as exc:
            return {"refused": f"rank {rank} did not check in within {timeout} "
                               f"({_first_line(exc)})"}
        if record.get("node") != expected:
            return {"refused": f"rank {rank} checked in from node {record.get('node')!r}, not "
                               f"from the node its placement-group bundle is on ({expected!r})"}
        admitted[str(rank)] = str(record["nonce"])
    return {"admitted": admitted, "proof": secrets.token_hex(16)}


def _prove(secret: bytes, nonce: str, rank: int, size: int, device: str) -> None:
    """Every rank shows, over the group's own connections, an HMAC only a holder of the
    secret can make; a process that took a rank's place on a connection cannot.

    Raises:
        RankGroupRefused: a rank's proof is wrong, or the proof did not complete in time.
    """
    import torch
    import torch.distributed as dist

    key = _key(secret, b"proof")
    tags = [hmac.new(key, f"{nonce}:{r}".encode(), hashlib.sha256).digest() for r in range(size)]
    mine = torch.tensor(list(tags[rank]), dtype=torch.uint8, device=device)
    gathered = [torch.zeros(len(tags[0]), dtype=torch.uint8, device=device) for _ in range(size)]
    try:
        work = dist.all_gather(gathered, mine, async_op=True)
        assert work is not None  # async_op=True always returns one
        work.wait(timeout=PROOF_TIMEOUT)
    except Exception as exc:
        raise RankGroupRefused(f"the group's connections did not carry every rank's proof within "
                           f"{PROOF_TIMEOUT} ({_first_line(exc)}); another process may hold "
                           "one of them") from None
    for other, tag in enumerate(gathered):
        if not hmac.compare_digest(bytes(tag.cpu().tolist()), tags[other]):
            raise RankGroupRefused(f"what rank {rank} received as rank {other} does not hold the "
                               "group's secret: another process took that rank's place on a "
                               "connection of the group")


def leave() -> None:
    """Leave the group this process joined, if any (safe to call more than once)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
