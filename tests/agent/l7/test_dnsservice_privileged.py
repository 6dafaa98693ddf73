"""The DNS proxy service as the agent runs it: its own thread and loop behind the real
redirect, the rules from the real engine's explain (rules.dns of the pod's egress entry),
learning applied on the caller's loop (the agent's, which owns the engine) before the pod
gets its answer; the HTTP proxies may hold the same port number over TCP."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import dns.rcode
import pytest

from septum.agent.l7 import fqdnstore
from septum.agent.l7.dnsservice import DnsProxyService, on_loop
from septum.agent.l7.fqdnlearning import FqdnLearning
from septum.dataplane import l7redirect
from septum.dataplane.sandbox import tcp_connect
from septum.operator.engine.explain import explain
from septum.operator.engine.rules import DnsRule

from .dnsserver import query_from
from .fqdnworld import DNS_SERVER, PEER, Agent, World, fqdn_policy

pytestmark = pytest.mark.privileged

PORT = 15080  # the HTTP egress proxy's default port number, over UDP here


async def test_service_enforces_engine_rules_and_opens_tofqdns(world: World) -> None:
    agent = Agent(
        world.node, world.interface, fqdn_policy([{"matchName": "api.example.com"}]), PORT
    )
    agent.load({})
    l7redirect.install_proxy_routing(world.box.node_ns)

    def lookup(client: str, server: str, port: int, protocol: str) -> tuple[DnsRule, ...]:
        verdict = explain(agent.engine, client, server, port, protocol).egress
        return verdict.l7_rules.dns if verdict is not None else ()

    learning = FqdnLearning(
        fqdnstore.load(world.state),
        on_loop(asyncio.get_running_loop(), agent.apply),
        endpoint_of=agent.endpoint_of,
        state_path=world.state,
    )
    service = DnsProxyService(lookup, agent.identity_of, learning, port=PORT, ns=world.box.node_ns)
    # Another proxy's TCP listener on the same port number does not stand in the way.
    http_listener = l7redirect.open_listener(PORT, socket.AF_INET, ns=world.box.node_ns)
    service.start()
    try:
        denied = await asyncio.to_thread(
            query_from, world.pod_ns, (DNS_SERVER, 53), "x.example.com"
        )
        assert denied.rcode() == dns.rcode.REFUSED
        assert not await asyncio.to_thread(tcp_connect, world.pod_ns, PEER, 443, 0.5)
        allowed = await asyncio.to_thread(
            query_from, world.pod_ns, (DNS_SERVER, 53), "api.example.com"
        )
        assert allowed.rcode() == dns.rcode.NOERROR
        assert await asyncio.to_thread(tcp_connect, world.pod_ns, PEER, 443)
    finally:
        await asyncio.to_thread(service.stop)
        http_listener.close()
        l7redirect.remove_proxy_routing(world.box.node_ns)
    assert Path(world.state).exists()  # saved on the way down
    assert world.server.queries == [("udp", "api.example.com.")]
