"""The DNS proxy behind the datapath's redirect: the pod asks its DNS server (192.0.2.53)
directly; the egress entry with `rules.dns` sends the query to the proxy's transparent
socket; the proxy enforces the rules, forwards with the pod's identity and answers from
the server's address; toFQDNs then lets the pod reach the answered address."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rcode
import pytest

from septum.agent.l7 import fqdnstore
from septum.agent.l7.dnsproxy import DnsEvent, DnsListener, DnsProxy
from septum.agent.l7.dnsredirect import marked_upstream, serve_redirected
from septum.agent.l7.fqdnlearning import FqdnLearning
from septum.dataplane import l7redirect, netns
from septum.dataplane.abi import DropReason, Verdict
from septum.dataplane.sandbox import tcp_connect
from septum.operator.engine.rules import DnsRule

from .dnsserver import query_from
from .fqdnworld import DNS_SERVER, PEER, POD, POD_IP, Agent, World, fqdn_policy

pytestmark = pytest.mark.privileged

PROXY_PORT = 15053
DNS_RULES = [{"matchPattern": "*.example.com"}]


@dataclass
class Redirected:
    agent: Agent
    listener: DnsListener
    events: list[DnsEvent]


@pytest.fixture
async def redirected(world: World) -> AsyncIterator[Redirected]:
    agent = Agent(world.node, world.interface, fqdn_policy(DNS_RULES), l7_port=PROXY_PORT)
    agent.load({})
    l7redirect.install_proxy_routing(world.box.node_ns)
    learning = FqdnLearning(
        fqdnstore.load(world.state),
        agent.apply,
        endpoint_of=lambda ip: str(POD) if ip == POD_IP else None,
    )
    rules = [DnsRule(match_pattern=r["matchPattern"]) for r in DNS_RULES]
    events: list[DnsEvent] = []
    proxy = DnsProxy(
        lambda request: rules,
        learn=learning.learn,
        observe=events.append,
        upstream=marked_upstream(agent.identity_of, world.box.node_ns),
    )
    listener = await serve_redirected(proxy, PROXY_PORT, ns=world.box.node_ns)
    try:
        yield Redirected(agent, listener, events)
    finally:
        await listener.close()
        l7redirect.remove_proxy_routing(world.box.node_ns)


def _ask(world: World, name: str, tcp: bool) -> dns.message.Message:
    return query_from(world.pod_ns, (DNS_SERVER, 53), name, tcp)


async def ask(world: World, name: str, tcp: bool = False) -> dns.message.Message:
    return await asyncio.to_thread(_ask, world, name, tcp)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_redirected_queries_are_enforced_and_learned(
    world: World, redirected: Redirected, tcp: bool
) -> None:
    assert not await asyncio.to_thread(tcp_connect, world.pod_ns, PEER, 443, 0.5)
    denied = await ask(world, "evil.example.org", tcp)
    assert denied.rcode() == dns.rcode.REFUSED
    allowed = await ask(world, "api.example.com", tcp)
    assert allowed.rcode() == dns.rcode.NOERROR
    assert {r.address for rrset in allowed.answer for r in rrset} == {PEER}
    # Only the allowed query reached the server, sent by the proxy (its upstream passed the
    # pod's own egress policy with the pod's identity).
    assert world.server.queries == [("tcp" if tcp else "udp", "api.example.com.")]
    requests = [e.request for e in redirected.events if not e.is_response]
    assert {(r.client[0], r.server) for r in requests} == {(POD_IP, (DNS_SERVER, 53))}
    assert await asyncio.to_thread(tcp_connect, world.pod_ns, PEER, 443)


async def test_no_proxy_means_dns_fails_closed(world: World) -> None:
    agent = Agent(world.node, world.interface, fqdn_policy(DNS_RULES), l7_port=PROXY_PORT)
    agent.load({})
    l7redirect.install_proxy_routing(world.box.node_ns)
    try:
        reader = world.node.flow_reader()
        reader.read_raw()
        assert await asyncio.to_thread(_ask_quick, world) is None
        assert world.server.queries == []
        flows = world.node.read_flows(timeout_s=1)
        assert any(
            f.verdict == Verdict.DROPPED and f.drop_reason == DropReason.PROXY_LOOKUP_FAILED
            for f in flows
        ), flows
    finally:
        l7redirect.remove_proxy_routing(world.box.node_ns)


def _ask_quick(world: World) -> bytes | None:
    """The answer to one UDP query, or None when none came within a second."""
    with netns.entered(world.pod_ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(1)
        query = dns.message.make_query(f"x{secrets.token_hex(2)}.example.com", "A")
        sock.sendto(query.to_wire(), (DNS_SERVER, 53))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None
