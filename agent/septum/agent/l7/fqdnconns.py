"""Which learned addresses still carry a pod's connection: the `last_active` answer the FQDN
cache's expiry asks, read from the datapath's conntrack.

An unexpired conntrack entry between a local pod's address and an address is an open
connection (as Cilium counts one for `--tofqdns-idle-connection-grace-period`); the
activity record keeps, per (endpoint, address), the last sweep that saw one open, so an
address whose connection has gone stays for the grace period after that sweep. Either
side of the key may be the pod (entries are kept in the orientation the datapath chose).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence

from septum.agent.l7.fqdncache import IPAddress
from septum.dataplane import abi

EndpointOf = Callable[[str], str | None]
# What the datapath's conntrack listing returns (NodeDatapath.conntrack()).
ConntrackEntries = list[tuple[abi.CtKey, abi.CtEntry]]


def _address(raw: Sequence[int], version: int) -> IPAddress:
    data = bytes(raw)
    if version == abi.IPVersion.V4:
        return ipaddress.IPv4Address(data[:4])
    return ipaddress.IPv6Address(data)


def open_connections(
    entries: Iterable[tuple[abi.CtKey, abi.CtEntry]],
    jiffies_now: int,
    endpoint_of: EndpointOf,
) -> set[tuple[str, IPAddress]]:
    """(endpoint, peer address) of every unexpired conntrack entry of a local pod."""
    found: set[tuple[str, IPAddress]] = set()
    for key, entry in entries:
        if entry.expires <= jiffies_now:
            continue
        source = _address(key.src_addr, key.ip_version)
        destination = _address(key.dst_addr, key.ip_version)
        for pod, peer in ((source, destination), (destination, source)):
            endpoint = endpoint_of(str(pod))
            if endpoint is not None:
                found.add((endpoint, peer))
    return found


class ConnectionActivity:
    """When each (endpoint, address) was last seen with an open connection."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, IPAddress], float] = {}

    def sweep(self, open_now: Iterable[tuple[str, IPAddress]], now: float) -> None:
        for pair in open_now:
            self._seen[pair] = now

    def last_active(self, endpoint: str, address: IPAddress) -> float | None:
        return self._seen.get((endpoint, address))

    def forget_before(self, cutoff: float) -> None:
        """Drop what no expiry can ask for any more (older than the grace period)."""
        self._seen = {pair: seen for pair, seen in self._seen.items() if seen >= cutoff}


__all__ = ["ConnectionActivity", "ConntrackEntries", "EndpointOf", "open_connections"]
