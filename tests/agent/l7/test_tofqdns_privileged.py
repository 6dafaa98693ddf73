"""toFQDNs end to end on the real datapath: a pod may reach 203.0.113.10 only after the
DNS proxy forwarded an answer naming it; the answer expires; the learned state survives
an agent restart.

The pod's egress policy allows the proxy (on the node: the host entity), the DNS server
and `toFQDNs: api.example.com` on TCP/443. The engine compiles, the adapter translates,
and the datapath in the node namespace enforces on the pod's veth. Until the redirect
exists, the pod sends its query to the proxy's address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest
from pyroute2 import IPRoute

from septum.agent.adapter import endpoint_policy
from septum.agent.l7 import fqdnstore
from septum.agent.l7.dnsproxy import DnsListener, DnsProxy, DnsRequest, plain_upstream, serve
from septum.agent.l7.fqdncache import IPAddress
from septum.agent.l7.fqdnlearning import FqdnLearning, Learned
from septum.dataplane import netns
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.endpointentry import EndpointSpec
from septum.dataplane.sandbox import (
    GATEWAY_V4,
    Sandbox,
    TcpServer,
    sandbox_namespaces,
    tcp_connect,
)
from septum.operator.engine.cluster import PodKey
from septum.operator.engine.rules import DnsRule
from septum.operator.engine.state import Engine
from septum.wellknown.reserved import ReservedIdentity

from .dnsserver import DnsServer, Record

pytestmark = pytest.mark.privileged

DNS_SERVER = "192.0.2.53"
PEER = "203.0.113.10"
POD_IP = "10.214.0.5"
POD = PodKey("app", "client")
ENDPOINT_ID = 1
TTL_S = 30
POLICY = {
    "apiVersion": "septum.io/v1alpha1",
    "kind": "SeptumNetworkPolicy",
    "metadata": {"name": "fqdn", "namespace": "app"},
    "spec": {
        "endpointSelector": {"matchLabels": {"app": "client"}},
        "egress": [
            {"toEntities": ["host"]},
            {"toCIDR": [f"{DNS_SERVER}/32"]},
            {
                "toFQDNs": [{"matchName": "api.example.com"}],
                "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
            },
        ],
    },
}


class Agent:
    """What the agent does for toFQDNs, on one engine and the real datapath."""

    def __init__(self, node: NodeDatapath, interface: str) -> None:
        self.node = node
        self.engine = Engine()
        self.interface = interface

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
            policies=[POLICY],
        )
        identity = self.engine.pod_identity[POD]
        self.node.upsert_endpoint(EndpointSpec(ENDPOINT_ID, self.interface, identity, POD_IP))
        prefixes = {str(net): number for net, number in self.engine.ipcache().items()}
        prefixes[f"{GATEWAY_V4}/32"] = int(ReservedIdentity.HOST)  # the node, as the agent
        self.node.upsert_prefixes(prefixes)
        self._write_policy()

    def apply(self, learned: Learned) -> None:
        changes = self.engine.set_fqdn_addresses(learned)
        self.node.upsert_prefixes({str(n): i for n, i in changes.ipcache_upserts.items()})
        for network in changes.ipcache_deletes:
            self.node.remove_prefix(str(network))
        if POD in changes.endpoints:
            self._write_policy()

    def _write_policy(self) -> None:
        self.node.replace_policy(ENDPOINT_ID, endpoint_policy(self.engine.endpoint_policy(POD)))


@dataclass
class World:
    box: Sandbox
    pod_ns: str
    interface: str
    node: NodeDatapath
    state: Path
    now: list[float] = field(default_factory=lambda: [1_000_000.0])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    prefix = f"sl7f{secrets.token_hex(2)}"
    box = Sandbox(prefix)
    closers: list[Any] = []
    try:
        pod = box.add_pod("a", POD_IP)
        outside = box.add_outside("out", f"{prefix}up", "192.0.2.1", [DNS_SERVER, PEER])
        with netns.entered(box.node_ns), IPRoute() as ipr:
            ipr.route("add", dst="203.0.113.0/24", gateway=DNS_SERVER)
        zone = {"api.example.com": [Record("A", PEER, ttl=TTL_S)]}
        closers.append(DnsServer(outside, DNS_SERVER, zone))
        closers.append(TcpServer(outside, PEER, 443))
        node = NodeDatapath(DatapathConfig(node_name=prefix, netns=box.node_ns))
        closers.append(type("Teardown", (), {"close": lambda self: node.teardown()})())
        yield World(box, pod.name, pod.host_interface, node, tmp_path / fqdnstore.STATE_FILE)
    finally:
        for closer in reversed(closers):
            closer.close()
        box.close()
        assert sandbox_namespaces(prefix) == [], "network namespaces left behind"
        assert not (Path("/sys/fs/bpf/septum") / prefix).exists(), "pins left behind"


@dataclass
class Running:
    agent: Agent
    learning: FqdnLearning
    listener: DnsListener


async def start(world: World) -> Running:
    agent = Agent(world.node, world.interface)
    cache = fqdnstore.load(world.state)
    agent.load(cache.addresses())
    learning = FqdnLearning(
        cache,
        agent.apply,
        endpoint_of=lambda ip: str(POD) if ip == POD_IP else None,
        state_path=world.state,
        clock=lambda: world.now[0],
    )

    def upstream(request: DnsRequest) -> socket.socket:
        with netns.entered(world.box.node_ns):
            return plain_upstream(request)

    rules = [DnsRule(match_pattern="*")]
    proxy = DnsProxy(lambda request: rules, learn=learning.learn, upstream=upstream)
    with netns.entered(world.box.node_ns):
        listener = await serve(proxy, "0.0.0.0", 0, lambda client, local: (DNS_SERVER, 53))
    return Running(agent, learning, listener)


@pytest.fixture
async def running(world: World) -> AsyncIterator[Running]:
    run = await start(world)
    try:
        yield run
    finally:
        await run.listener.close()


def _resolve(world: World, port: int) -> set[str]:
    with netns.entered(world.pod_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        query = dns.message.make_query("api.example.com", "A")
        reply = dns.query.udp(query, GATEWAY_V4, timeout=5, port=port, sock=sock)
    assert reply.rcode() == dns.rcode.NOERROR
    return {r.address for rrset in reply.answer for r in rrset}


async def reach(world: World, timeout_s: float = 5.0) -> bool:
    return await asyncio.to_thread(tcp_connect, world.pod_ns, PEER, 443, timeout_s)


def never_active(endpoint: str, address: IPAddress) -> float | None:
    return None


async def test_peer_allowed_only_after_resolution_until_expiry(
    world: World, running: Running
) -> None:
    assert not await reach(world, 0.5)
    port = running.listener.address[1]
    # The answer is released after the datapath allows the address: connect at once.
    assert await asyncio.to_thread(_resolve, world, port) == {PEER}
    assert await reach(world)
    assert fqdnstore.load(world.state).addresses() == {
        ipaddress.ip_address(PEER): {"api.example.com."}
    }
    world.now[0] += TTL_S
    assert await running.learning.expire(never_active)
    assert not await reach(world, 0.5)


async def test_learned_state_survives_an_agent_restart(world: World, running: Running) -> None:
    assert await asyncio.to_thread(_resolve, world, running.listener.address[1]) == {PEER}
    await running.listener.close()
    # The old agent's allow taken away, so only the restored state can give it back.
    world.node.remove_prefix(f"{PEER}/32")
    assert not await reach(world, 0.5)
    # A new agent: a fresh engine that reads the state file, the datapath rewritten.
    restarted = await start(world)
    try:
        assert restarted.learning.cache.addresses()
        assert await reach(world)  # no new lookup needed
    finally:
        await restarted.listener.close()
