"""The workload every datapath figure is measured on, Septum's and its peers' alike:
10,000 ipcache prefixes, 10,000 policy entries (one L3+L4 entry per remote identity)
and the three benchmarked packets.  lab/gobuild/ciliumpeer/fill.go writes the same
population into Cilium's maps; the packets are handed to it as bytes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from septum.dataplane import abi
from septum.dataplane.packets import TCP_ACK, tcp4
from septum.dataplane.policy import PolicyEntry

ENTRIES: Final = 10_000
FIRST_PEER_IDENTITY: Final = 100_000
POD_IPV4: Final = "10.199.0.1"
POD_IDENTITY: Final = 5000
# the benchmarked peer is entry 5: identity 100005, allowed on TCP port 6
BENCH_PEER: Final = 5
DENIED_PORT: Final = 9999
SOURCE_PORT: Final = 40000


def peer_ipv4(i: int) -> str:
    return f"10.200.{i // 250}.{i % 250 + 1}"


def peer_port(i: int) -> int:
    return 1 + i % 1000


def policy_entries(
    direction: abi.TrafficDirection, extra: Sequence[PolicyEntry] = ()
) -> tuple[PolicyEntry, ...]:
    """10,000 entries: one L3+L4 entry per remote identity, ports spread over 1..1000."""
    entries = [
        PolicyEntry(direction, FIRST_PEER_IDENTITY + i, 6, peer_port(i), rule_id=i + 1)
        for i in range(ENTRIES)
    ]
    return tuple(entries[: ENTRIES - len(extra)]) + tuple(extra)


def prefixes() -> dict[str, int]:
    return {f"{peer_ipv4(i)}/32": FIRST_PEER_IDENTITY + i for i in range(ENTRIES)}


def allowed_packet() -> bytes:
    """54-byte TCP ACK from the pod to the benchmarked peer on its allowed port."""
    return tcp4(POD_IPV4, peer_ipv4(BENCH_PEER), SOURCE_PORT, peer_port(BENCH_PEER), TCP_ACK)


def denied_packet() -> bytes:
    """The same flow's packet to a port no entry allows (default deny)."""
    return tcp4(POD_IPV4, peer_ipv4(BENCH_PEER), SOURCE_PORT, DENIED_PORT, TCP_ACK)
