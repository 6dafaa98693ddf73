"""toFQDNs end to end on the real datapath: a pod may reach 203.0.113.10 only after the
DNS proxy forwarded an answer naming it; the answer expires; the learned state survives
an agent restart.

The pod's egress policy allows the proxy (on the node: the host entity), the DNS server
and `toFQDNs: api.example.com` on TCP/443. The engine compiles, the adapter translates,
and the datapath in the node namespace enforces on the pod's veth. Here the pod sends its
query to the proxy's address (test_dnsredirect_privileged: through the redirect).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rcode
import pytest

from septum.agent.l7 import fqdnstore
from septum.agent.l7.dnsproxy import DnsListener, DnsProxy, DnsRequest, plain_upstream, serve
from septum.agent.l7.fqdncache import IPAddress
from septum.agent.l7.fqdnconns import ConnectionActivity, open_connections
from septum.agent.l7.fqdnlearning import FqdnLearning
from septum.dataplane import netns
from septum.dataplane.sandbox import GATEWAY_V4, echo, tcp_connect, tcp_connection
from septum.operator.engine.rules import DnsRule

from .dnsserver import query_from
from .fqdnworld import DNS_SERVER, PEER, POD, POD_IP, TTL_S, Agent, World, fqdn_policy

pytestmark = pytest.mark.privileged


@dataclass
class Running:
    agent: Agent
    learning: FqdnLearning
    listener: DnsListener


async def start(world: World) -> Running:
    agent = Agent(world.node, world.interface, fqdn_policy())
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
    reply = query_from(world.pod_ns, (GATEWAY_V4, port), "api.example.com")
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


async def test_an_open_connection_keeps_its_expired_address(world: World, running: Running) -> None:
    assert await asyncio.to_thread(_resolve, world, running.listener.address[1]) == {PEER}
    with tcp_connection(world.pod_ns, PEER, 443) as sock:
        assert echo(sock)
        activity = ConnectionActivity()
        world.now[0] += TTL_S  # the answer's TTL is over
        entries = world.node.conntrack()
        activity.sweep(
            open_connections(entries, world.node.jiffies(), running.agent.endpoint_of),
            world.now[0],
        )
        assert activity.last_active(str(POD), ipaddress.ip_address(PEER)) == world.now[0]
        assert not await running.learning.expire(activity.last_active)  # kept: still open
        assert echo(sock)
        assert await reach(world)
    world.now[0] += 1  # no sweep sees it open any more; grace is 0 s
    assert await running.learning.expire(activity.last_active)
    assert not await reach(world, 0.5)
