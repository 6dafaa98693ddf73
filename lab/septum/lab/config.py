"""Addresses, ports, names and paths of one lab: the single place they are decided.

Every name the lab gives a kernel object starts with ``slab`` so that ``lab down`` can find all of
them (and nothing else). Interface names stay within Linux's 15 characters.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

PREFIX = "slab"
BRIDGE = "slab-br0"
# The lab network: the bridge in the host namespace holds .1, node N holds .(10+N).
LAB_NETWORK = ipaddress.IPv4Network("10.213.0.0/24")
# Node N gets pod CIDR 10.214.N.0/24 out of the cluster CIDR.
CLUSTER_CIDR = ipaddress.IPv4Network("10.214.0.0/16")
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/16")
KUBERNETES_SERVICE_IP = "10.96.0.1"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# Ports on the host, bound to the bridge address or 127.0.0.1 only; chosen away from the
# upstream defaults (6443, 2379, 10257, 10259) so a real cluster on the same machine never collides.
APISERVER_PORT = 16443
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
CONTROLLER_MANAGER_PORT = 20257
SCHEDULER_PORT = 20259
# Inside each node namespace, so no collision with the host.
KUBELET_PORT = 10250
HOST_PORTS = {
    "kube-apiserver": APISERVER_PORT,
    "etcd client": ETCD_CLIENT_PORT,
    "etcd peer": ETCD_PEER_PORT,
    "kube-controller-manager": CONTROLLER_MANAGER_PORT,
    "kube-scheduler": SCHEDULER_PORT,
}
CNI_BIN_DIR = Path("/usr/lib/cni")
NETNS_DIR = Path("/var/run/netns")
NETNS_ETC_DIR = Path("/etc/netns")


def cache_dir() -> Path:
    return Path(os.environ.get("SEPTUM_CACHE", str(Path.home() / ".cache" / "septum")))


def default_state_dir() -> Path:
    return cache_dir() / "lab" / "default"


def host_address() -> str:
    return str(LAB_NETWORK.network_address + 1)


def apiserver_url() -> str:
    return f"https://{host_address()}:{APISERVER_PORT}"


@dataclass(frozen=True)
class NodeSpec:
    """One lab node: its namespace, addresses and pod CIDR, all derived from its index."""

    index: int  # 1-based

    @property
    def name(self) -> str:
        return f"slab-node{self.index}"

    @property
    def netns(self) -> str:
        return f"slab-node{self.index}"

    @property
    def host_link(self) -> str:
        # The bridge-side end of the node's veth (host namespace); the node side is renamed eth0.
        return f"slab-n{self.index}"

    @property
    def ip(self) -> str:
        return str(LAB_NETWORK.network_address + 10 + self.index)

    @property
    def pod_cidr(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.214.{self.index}.0/24")


_NODE_NAME = re.compile(r"slab-node[0-9]+")


def is_node_name(name: str) -> bool:
    """True for a name NodeSpec gives a lab node (a lab of any size)."""
    return _NODE_NAME.fullmatch(name) is not None


def nodes(count: int) -> list[NodeSpec]:
    return [NodeSpec(i) for i in range(1, count + 1)]


def pod_netns(pod_uid: str) -> str:
    return f"slab-pod-{pod_uid}"
