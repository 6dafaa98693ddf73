"""The Observer's peer directory, kept from the agent's Node watch.

peer.Peer/Notify lists every node of the cluster, as Hubble's peer service does: a relay
seeded with any one agent (the chart's `septum-peer` Service) learns them all. Each node is
announced at its InternalIP (ExternalIP when it has none, as Cilium's GetNodeIP) with this
agent's Observer port, since the chart runs every agent on the same port, and with the TLS
server name of its node. This node itself is announced where it listens, unless it listens
on every address: then at its InternalIP too, or at `--observer-advertise-address`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from septum.agent.observerconfig import ObserverOptions, join_host_port
from septum.dataplane.observe.peers import Peer, PeerDirectory, tls_server_name

log = logging.getLogger(__name__)


def node_address(node: Mapping[str, Any]) -> str | None:
    """Where other nodes reach `node`: its InternalIP, else its ExternalIP (IPv4 first)."""
    addresses = (node.get("status") or {}).get("addresses") or []
    for kind in ("InternalIP", "ExternalIP"):
        found = [str(a["address"]) for a in addresses if a.get("type") == kind and a.get("address")]
        if found:
            return next((ip for ip in found if ":" not in ip), found[0])
    return None


class ObserverPeers:
    """Writes one peer per Node into `directory`; tells `on_local_address` where this node's
    own Observer is advertised whenever that changes."""

    def __init__(
        self,
        directory: PeerDirectory,
        options: ObserverOptions,
        local_node: str,
        cluster: str,
        port: int,
        local_address: str,
        on_local_address: Callable[[str], None],
    ) -> None:
        self.directory = directory
        self.options = options
        self.local_node = local_node
        self.cluster = cluster
        self.port = port
        self._on_local_address = on_local_address
        # announced before the Node is known, so that a follower never misses this node
        self._upsert(local_node, local_address)

    def apply(self, event_type: str, node: Mapping[str, Any]) -> None:
        """One watch event of a Node ("upsert" or "delete")."""
        name = str((node.get("metadata") or {}).get("name") or "")
        if not name:
            return
        address = None if event_type == "delete" else self._address(name, node)
        if address is None:
            if name != self.local_node and self.directory.remove(name):
                log.info("observer peer %s deleted", name)
            return
        self._upsert(name, address)

    def _address(self, name: str, node: Mapping[str, Any]) -> str | None:
        options = self.options
        if name == self.local_node:
            if options.advertise_address:
                return options.advertise_address
            if not options.listens_everywhere():
                return None  # its own listener's address, announced at the start, stands
        ip = node_address(node)
        return join_host_port(ip, self.port) if ip else None

    def _server_name(self, name: str) -> str:
        if name == self.local_node:
            return self.options.server_name(name, self.cluster)
        return tls_server_name(name, self.cluster) if self.options.tls else ""

    def _upsert(self, name: str, address: str) -> None:
        change = self.directory.upsert(Peer(name, address, self._server_name(name)))
        if change is None:
            return
        log.info("observer peer %s %s at %s", name, change, address)
        if name == self.local_node:
            self._on_local_address(address)
