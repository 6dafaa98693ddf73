"""A node for toFQDNs tests: one pod, the real datapath, and an 'outside' behind the uplink
with a DNS server (192.0.2.53) and a peer (203.0.113.10:443); plus the part of an agent
that compiles with the engine and writes the datapath (the adapter's translation)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from septum.agent.adapter import endpoint_policy
from septum.agent.l7 import fqdnstore
from septum.agent.l7.fqdnlearning import Learned
from septum.dataplane import netns
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.endpointentry import EndpointSpec
from septum.dataplane.sandbox import GATEWAY_V4, Sandbox, TcpServer, sandbox_namespaces
from septum.operator.engine.cluster import PodKey
from septum.operator.engine.state import Engine
from septum.wellknown.reserved import ReservedIdentity

from .dnsserver import DnsServer, Record

DNS_SERVER = "192.0.2.53"
PEER = "203.0.113.10"
POD_IP = "10.214.0.5"
POD = PodKey("app", "client")
ENDPOINT_ID = 1
TTL_S = 30
ZONE = {
    "api.example.com": [Record("A", PEER, ttl=TTL_S)],
    "evil.example.org": [Record("A", "203.0.113.66")],
}


def fqdn_policy(dns_rules: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The pod may use DNS (with `dns_rules`: through the proxy) and reach api.example.com
    on TCP/443; the proxy's own address (the node) is allowed as the host entity."""
    to_dns: dict[str, Any] = {"toCIDR": [f"{DNS_SERVER}/32"]}
    if dns_rules is not None:
        ports = [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]
        to_dns["toPorts"] = [{"ports": ports, "rules": {"dns": dns_rules}}]
    return {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "fqdn", "namespace": "app"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "client"}},
            "egress": [
                {"toEntities": ["host"]},
                to_dns,
                {
                    "toFQDNs": [{"matchName": "api.example.com"}],
                    "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                },
            ],
        },
    }


class Agent:
    """What the agent does for toFQDNs, on one engine and the real datapath."""

    def __init__(
        self, node: NodeDatapath, interface: str, policy: dict[str, Any], l7_port: int = 0
    ) -> None:
        self.node = node
        self.engine = Engine()
        self.interface = interface
        self.policy = policy
        self.l7_port = l7_port

    def load(self, learned: Learned) -> None:
        self.engine.set_fqdn_addresses(learned)  # restored state, before the first sync
        self.engine.load(
            namespaces=[{"metadata": {"name": "app"}}],
            pods=[
                {
                    "metadata": {"name": "client", "namespace": "app", "labels": {"app": "client"}},
                    "spec": {"containers": [{"name": "c"}]},
                    "status": {"podIP": POD_IP},
                }
            ],
            policies=[self.policy],
        )
        self.node.upsert_endpoint(EndpointSpec(ENDPOINT_ID, self.interface, self.identity, POD_IP))
        prefixes = {str(net): number for net, number in self.engine.ipcache().items()}
        prefixes[f"{GATEWAY_V4}/32"] = int(ReservedIdentity.HOST)  # the node, as the agent
        self.node.upsert_prefixes(prefixes)
        self._write_policy()

    @property
    def identity(self) -> int:
        return self.engine.pod_identity[POD]

    def endpoint_of(self, address: str) -> str | None:
        return str(POD) if address == POD_IP else None

    def identity_of(self, address: str) -> int | None:
        return self.identity if address == POD_IP else None

    def apply(self, learned: Learned) -> None:
        changes = self.engine.set_fqdn_addresses(learned)
        self.node.upsert_prefixes({str(n): i for n, i in changes.ipcache_upserts.items()})
        for network in changes.ipcache_deletes:
            self.node.remove_prefix(str(network))
        if POD in changes.endpoints:
            self._write_policy()

    def _write_policy(self) -> None:
        policy = endpoint_policy(self.engine.endpoint_policy(POD), self.l7_port)
        self.node.replace_policy(ENDPOINT_ID, policy)


@dataclass
class World:
    box: Sandbox
    pod_ns: str
    interface: str
    node: NodeDatapath
    server: DnsServer
    state: Path
    now: list[float] = field(default_factory=lambda: [1_000_000.0])


@contextmanager
def fqdn_world(tmp_path: Path) -> Iterator[World]:
    prefix = f"sl7f{secrets.token_hex(2)}"
    box = Sandbox(prefix)
    closers: list[Any] = []
    try:
        pod = box.add_pod("a", POD_IP)
        outside = box.add_outside("out", f"{prefix}up", "192.0.2.1", [DNS_SERVER, PEER])
        with netns.entered(box.node_ns), IPRoute() as ipr:
            ipr.route("add", dst="203.0.113.0/24", gateway=DNS_SERVER)
        server = DnsServer(outside, DNS_SERVER, ZONE)
        closers.append(server)
        closers.append(TcpServer(outside, PEER, 443))
        node = NodeDatapath(DatapathConfig(node_name=prefix, netns=box.node_ns))
        closers.append(type("Teardown", (), {"close": lambda self: node.teardown()})())
        state = tmp_path / fqdnstore.STATE_FILE
        yield World(box, pod.name, pod.host_interface, node, server, state)
    finally:
        for closer in reversed(closers):
            closer.close()
        box.close()
        assert sandbox_namespaces(prefix) == [], "network namespaces left behind"
        assert not (Path("/sys/fs/bpf/septum") / prefix).exists(), "pins left behind"
