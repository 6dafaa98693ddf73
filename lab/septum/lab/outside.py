"""Peers "outside the cluster": extra namespaces on the lab bridge with documentation addresses.

Policy tests need destinations that are not pods (toCIDR / ipBlock rules). Each peer is a
namespace with a lab-network address (the next hop) and a documentation address (192.0.2.0/24,
198.51.100.0/24 or 203.0.113.0/24) that every node routes to it; the peer routes the pod CIDRs
back through their nodes. Nothing reaches the host's uplink: the host does not forward.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
from dataclasses import dataclass

from septum.lab import config
from septum.lab.config import NodeSpec
from septum.lab.errors import LabError
from septum.lab.shell import in_netns, run

DOCUMENTATION_NETWORKS = [
    ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]
_FIRST_PEER_HOST = 100  # peers take 10.213.0.101 .. 10.213.0.199


@dataclass(frozen=True)
class Peer:
    netns: str
    address: str
    lab_ip: str
    host_link: str


def add_peer(address: str, nodes: list[NodeSpec]) -> Peer:
    """Creates a peer answering at ``address`` (a documentation address), routed from all nodes."""
    ip = ipaddress.IPv4Address(address)
    if not any(ip in net for net in DOCUMENTATION_NETWORKS):
        raise LabError(
            f"outside peer address {address}: must be in 192.0.2.0/24, "
            "198.51.100.0/24 or 203.0.113.0/24"
        )
    index = next(
        (i for i in range(1, 100) if not (config.NETNS_DIR / f"slab-out{i}").exists()), None
    )
    if index is None:
        raise LabError("outside peers: all 99 slots are in use")
    peer = Peer(
        f"slab-out{index}",
        address,
        str(config.LAB_NETWORK.network_address + _FIRST_PEER_HOST + index),
        f"slab-o{index}",
    )
    run(["ip", "netns", "add", peer.netns])
    try:
        run(
            [
                "ip",
                "link",
                "add",
                peer.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                peer.netns,
            ]
        )
        run(["ip", "link", "set", peer.host_link, "master", config.BRIDGE, "up"])
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{peer.lab_ip}/{config.LAB_NETWORK.prefixlen}", "dev", "eth0"],
            ["ip", "addr", "add", f"{address}/32", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
        ):
            run(in_netns(peer.netns, argv))
        for node in nodes:
            run(in_netns(peer.netns, ["ip", "route", "add", str(node.pod_cidr), "via", node.ip]))
            run(in_netns(node.netns, ["ip", "route", "add", f"{address}/32", "via", peer.lab_ip]))
    except LabError:
        remove_peer(peer, nodes)
        raise
    return peer


def remove_peer(peer: Peer, nodes: list[NodeSpec]) -> None:
    for node in nodes:
        run(in_netns(node.netns, ["ip", "route", "del", f"{peer.address}/32"]), check=False)
    for pid in run(["ip", "netns", "pids", peer.netns], check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run(["ip", "netns", "delete", peer.netns], check=False)
    run(["ip", "link", "delete", peer.host_link], check=False)
