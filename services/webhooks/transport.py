"""One webhook delivery attempt: a POST that cannot be pointed somewhere else.

httpcore (httpx's engine) with a network backend of our own:

- it resolves the host once, checks each address with the destination policy and connects to
  an allowed one, then checks the connected peer again: what is checked is what is reached;
  TLS still verifies the certificate against the URL's host name (SNI);
- one deadline covers the whole exchange (connect, TLS, request, response): every socket
  operation gets only the time that is left, so a receiver that trickles bytes is cut off;
- redirects are not followed (httpcore never does), no proxy from the environment is used, and
  at most ``max_response_bytes`` of the answer are read.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore

from services.webhooks.destinations import Destination, DestinationPolicy, parse_address
from trainforge.errors import WebhookDestinationRefused

#: Characters of a failed answer's body kept for GET /v1/webhooks/{id}/deliveries.
ERROR_EXCERPT = 300


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one POST went: ``status`` when the receiver answered, else ``error``."""

    status: int | None
    error: str | None
    #: what this attempt counts as in the metrics: delivered, http_error, refused, timeout,
    #: unreachable
    outcome: str

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, timeout: float | None = None) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise httpcore.TimeoutException("the delivery's deadline passed")
        return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation ends by the attempt's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.left(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, self._deadline.left(timeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _GuardedBackend(httpcore.NetworkBackend):
    """Connects only to addresses the policy allows, within the deadline."""

    def __init__(self, policy: DestinationPolicy, destination: Destination,
                 deadline: _Deadline) -> None:
        self._policy = policy
        self._destination = destination
        self._deadline = deadline
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = self._policy.resolve(self._destination)  # each one checked
        last: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(str(address), port, self._deadline.left(timeout),
                                                 local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            peer = stream.get_extra_info("server_addr")[0]
            try:
                self._policy.check_address(parse_address(str(peer)) or address, self._destination)
            except WebhookDestinationRefused:
                stream.close()
                raise
            return _DeadlineStream(stream, self._deadline)
        raise last or httpcore.ConnectError(f"{host} has no address to connect to")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - httpcore retries are off
        time.sleep(seconds)


def post(
    policy: DestinationPolicy,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    max_response_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Attempt:
    """POST ``body`` to ``url`` once, under ``policy``; never raises for the receiver's sake.

    Args:
        timeout_s: the whole attempt's deadline.
        max_response_bytes: most bytes of the answer read (the rest is never received).
        ssl_context: trust for https (default: the system's CAs).

    Returns:
        The attempt: a 2xx is delivered; anything else (3xx included: redirects are not
        followed) says why not.
    """
    deadline = _Deadline(timeout_s)
    try:
        destination = policy.check_url(url)
    except WebhookDestinationRefused as exc:
        return Attempt(None, exc.message, "refused")
    backend = _GuardedBackend(policy, destination, deadline)
    request_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    request_headers.append((b"content-type", b"application/json"))
    limits = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
    try:
        with httpcore.ConnectionPool(ssl_context=ssl_context or ssl.create_default_context(),
                                     network_backend=backend, retries=0) as pool, \
                pool.stream("POST", url, headers=request_headers, content=body,
                            extensions={"timeout": limits}) as response:
            excerpt = _read_capped(response.iter_stream(), max_response_bytes)
            status = response.status
    except WebhookDestinationRefused as exc:
        return Attempt(None, exc.message, "refused")
    except httpcore.TimeoutException:
        return Attempt(None, f"no complete answer within {timeout_s:g}s", "timeout")
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol,
            ssl.SSLError, OSError) as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:ERROR_EXCERPT], "unreachable")
    if 200 <= status < 300:
        return Attempt(status, None, "delivered")
    what = "a redirect, not followed" if 300 <= status < 400 else "not a 2xx"
    text = excerpt.decode("utf-8", "replace").strip()
    return Attempt(status, f"HTTP {status} ({what})" + (f": {text}" if text else ""),
                   "http_error")


def _read_capped(chunks: Iterable[bytes], limit: int) -> bytes:
    """The first ``limit`` bytes of the answer, then stop reading; an excerpt is returned."""
    seen = 0
    head = b""
    for chunk in chunks:
        if len(head) < ERROR_EXCERPT:
            head += chunk[:ERROR_EXCERPT - len(head)]
        seen += len(chunk)
        if seen >= limit:
            break
    return head
