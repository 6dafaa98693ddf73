"""The lab network: a bridge in the host namespace and one network namespace per node.

Sealed by construction: no namespace gets a default route and nothing is NATed to the uplink.
Node namespaces route the other nodes' pod CIDRs via those nodes' bridge addresses (so pod-to-pod
traffic between nodes really crosses the bridge), and the host routes pod CIDRs to their nodes only
so that the API server's replies reach pods. Routes through the bridge vanish with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from septum.lab import config
from septum.lab.config import NodeSpec
from septum.lab.shell import in_netns, run


def list_netns(prefix: str = config.PREFIX) -> list[str]:
    if not config.NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in config.NETNS_DIR.iterdir() if p.name.startswith(prefix))


def list_links(prefix: str = config.PREFIX) -> list[str]:
    out = run(["ip", "-o", "link", "show"])
    names = []
    for line in out.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if name.startswith(prefix):
            names.append(name)
    return names


def create_bridge() -> None:
    run(
        [
            "ip",
            "link",
            "add",
            config.BRIDGE,
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]
    )
    run(
        [
            "ip",
            "addr",
            "add",
            f"{config.host_address()}/{config.LAB_NETWORK.prefixlen}",
            "dev",
            config.BRIDGE,
        ]
    )
    run(["ip", "link", "set", config.BRIDGE, "up"])


def create_node(node: NodeSpec, all_nodes: list[NodeSpec]) -> None:
    ns = node.netns
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", node.host_link, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", node.host_link, "master", config.BRIDGE, "up"])
    for argv in (
        ["ip", "link", "set", "lo", "up"],
        ["ip", "addr", "add", f"{node.ip}/{config.LAB_NETWORK.prefixlen}", "dev", "eth0"],
        ["ip", "link", "set", "eth0", "up"],
        # Written directly: procps' sysctl is not on every minimal Debian.
        ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
        # Service IPs must be routable for node-local clients before kube-proxy's DNAT rewrites
        # them; a port-less bridge swallows what kube-proxy does not translate instead of a
        # default route that could leak it (the dummy driver is not always available).
        ["ip", "link", "add", "slab-svc", "type", "bridge"],
        ["ip", "link", "set", "slab-svc", "up"],
        ["ip", "route", "add", str(config.SERVICE_CIDR), "dev", "slab-svc"],
    ):
        run(in_netns(ns, argv))
    for other in all_nodes:
        if other.index != node.index:
            run(in_netns(ns, ["ip", "route", "add", str(other.pod_cidr), "via", other.ip]))
    run(["ip", "route", "add", str(node.pod_cidr), "via", node.ip, "dev", config.BRIDGE])


def kill_netns_processes(ns: str) -> None:
    out = run(["ip", "netns", "pids", ns], check=False)
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def delete_all() -> None:
    """Removes every slab namespace, link and /etc/netns entry (idempotent)."""
    for ns in list_netns():
        kill_netns_processes(ns)
    for ns in list_netns():
        run(["ip", "netns", "delete", ns], check=False)
    for link in list_links():
        run(["ip", "link", "delete", link], check=False)
    if config.NETNS_ETC_DIR.is_dir():
        for entry in config.NETNS_ETC_DIR.iterdir():
            if entry.name.startswith(config.PREFIX):
                for f in entry.iterdir():
                    f.unlink()
                entry.rmdir()
        _rmdir_if_empty(config.NETNS_ETC_DIR)


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
