"""Where a webhook may point: the one policy behind ``POST /v1/webhooks`` and every delivery.

A team chooses the URL, and the service calls it from inside the cluster: without a policy, a
webhook would let any team reach the cloud's metadata endpoint, the database or an internal
admin port (server-side request forgery). The rules:

- ``https`` only; ``http`` only to a loopback address, and only in embedded mode;
- no user name or password in the URL;
- when ``TRAINFORGE_WEBHOOK_ALLOWED_HOSTS`` lists host names (``hooks.example.com``, or
  ``*.example.com`` for any name below it), the URL's host must be one of them (an IP-literal
  host must lie in a listed network);
- every address the host resolves to must be public, unless it lies in a network listed in
  ``TRAINFORGE_WEBHOOK_ALLOWED_HOSTS`` (``10.20.0.0/16``); a cloud-metadata address only
  when listed by itself (``169.254.169.254/32``); loopback in embedded mode. Multicast and
  unspecified addresses never.

The addresses are checked when the subscription is created (all of them) and again at every
attempt, on the address the connection is actually made to (:mod:`services.webhooks.transport`
resolves once, checks, and connects to that address): a DNS answer that changes between the
check and the connection (DNS rebinding) cannot point a delivery elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from trainforge.errors import WebhookDestinationRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Instance-metadata endpoints of the clouds (AWS, ECS task metadata, AWS IPv6, Alibaba,
#: Oracle). All are non-public already; they additionally need to be listed one by one, so
#: that allowing a private range never opens the node's credentials.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a) for a in (
        "169.254.169.254", "169.254.170.2", "169.254.170.23", "fd00:ec2::254", "fd00:ec2::23",
        "100.100.100.200", "192.0.0.192",
    )
)
MAX_URL_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked webhook URL, split into what the connection needs."""

    url: str
    scheme: str
    host: str
    port: int
    #: The host as an address, when the URL names one.
    literal: IPAddress | None


def parse_address(value: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(value.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return address


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """The operator's allowed hosts and networks, and whether this is the embedded mode.

    Build it with :meth:`parse`.
    """

    names: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    embedded: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str], *, embedded: bool) -> DestinationPolicy:
        """The policy of ``TRAINFORGE_WEBHOOK_ALLOWED_HOSTS`` entries.

        Args:
            entries: host names, ``*.domain`` patterns, addresses or CIDR networks.
            embedded: the embedded mode (http to loopback allowed).

        Raises:
            ValueError: an entry is none of those (the message names it).
        """
        names: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            label = entry.removeprefix("*.")
            if not label or any(not part or not all(c.isalnum() or c == "-" for c in part)
                                for part in label.split(".")):
                raise ValueError(f"webhook allowed host {raw!r} is not a host name, *.domain, "
                                 "address or CIDR network")
            names.append(entry)
        return cls(tuple(names), tuple(networks), embedded)

    # --- the URL ---------------------------------------------------------------------------

    def check_url(self, url: str) -> Destination:
        """The URL's scheme, credentials and host against the policy (no DNS yet).

        Raises:
            WebhookDestinationRefused: what is wrong, and what would be accepted.
        """
        if len(url) > MAX_URL_LENGTH or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
            raise WebhookDestinationRefused(
                f"a webhook URL is at most {MAX_URL_LENGTH} printable characters, no spaces")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise WebhookDestinationRefused(f"{url!r} is not a URL: {exc}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise WebhookDestinationRefused(f"webhooks are sent over https; {url!r} is not")
        if parts.username is not None or parts.password is not None:
            raise WebhookDestinationRefused("a webhook URL carries no user name or password; "
                                            "the signature authenticates the sender")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise WebhookDestinationRefused(f"{url!r} names no host")
        literal = parse_address(host)
        destination = Destination(url, scheme, host, port or (443 if scheme == "https" else 80),
                                  literal)
        if scheme == "http" and not (self.embedded and self._loopback_name(destination)):
            raise WebhookDestinationRefused(
                "webhooks are sent over https; http is accepted only to a loopback address "
                "(127.0.0.1, ::1, localhost) of an embedded server")
        if self.names and not self._name_allowed(destination):
            listed = ", ".join(self.names + tuple(str(n) for n in self.networks))
            raise WebhookDestinationRefused(
                f"{host} is not among the webhook destinations this service allows ({listed}); "
                "ask its operator to add it to TRAINFORGE_WEBHOOK_ALLOWED_HOSTS")
        if literal is not None:
            self.check_address(literal, destination)
        return destination

    def _loopback_name(self, destination: Destination) -> bool:
        if destination.literal is not None:
            return destination.literal.is_loopback
        return destination.host.lower() == "localhost"

    def _name_allowed(self, destination: Destination) -> bool:
        if destination.literal is not None:
            return any(destination.literal in net for net in self.networks)
        host = destination.host.lower()
        return any(host == name or (name.startswith("*.") and host.endswith(name[1:]))
                   for name in self.names) or (self.embedded and self._loopback_name(destination))

    # --- the addresses ---------------------------------------------------------------------

    def check_address(self, address: IPAddress, destination: Destination) -> None:
        """One address the destination resolves to (or that a delivery connected to).

        Raises:
            WebhookDestinationRefused: the address is not one a webhook may reach.
        """
        address = parse_address(str(address)) or address
        where = f"{destination.host} ({address})" if destination.literal is None else str(address)
        if address.is_multicast or address.is_unspecified:
            raise WebhookDestinationRefused(f"{where} is not an address a webhook can reach")
        if address in METADATA_ADDRESSES:
            if not any(net.num_addresses == 1 and address in net for net in self.networks):
                raise WebhookDestinationRefused(
                    f"{where} is a cloud metadata endpoint; webhooks never call it unless "
                    "TRAINFORGE_WEBHOOK_ALLOWED_HOSTS lists that address by itself")
            return
        if address.is_global:
            return
        if (address.is_loopback and self.embedded) or any(address in net
                                                          for net in self.networks):
            return
        kind = ("loopback" if address.is_loopback else "link-local" if address.is_link_local
                else "private or reserved")
        raise WebhookDestinationRefused(
            f"{where} is a {kind} address; webhooks reach it only when the operator lists its "
            "network in TRAINFORGE_WEBHOOK_ALLOWED_HOSTS")

    def resolve(self, destination: Destination) -> list[IPAddress]:
        """Every address the destination's host resolves to, each checked.

        Raises:
            WebhookDestinationRefused: the name does not resolve, or one address is refused
                (any of them could be the one a delivery connects to).
        """
        if destination.literal is not None:
            return [destination.literal]
        try:
            infos = socket.getaddrinfo(destination.host, destination.port,
                                       type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise WebhookDestinationRefused(
                f"{destination.host} does not resolve from the service ({exc})") from None
        addresses: list[IPAddress] = []
        for info in infos:
            address = parse_address(str(info[4][0]))
            if address is not None and address not in addresses:
                self.check_address(address, destination)
                addresses.append(address)
        if not addresses:
            raise WebhookDestinationRefused(f"{destination.host} resolves to no address")
        return addresses
