"""The DNS proxy on real sockets: a pod namespace asks, the proxy in the node namespace
decides, a real DNS server behind the node's uplink (192.0.2.53) answers.

Until the datapath redirects pods' DNS to the proxy, the pod sends to the proxy's
address and the proxy forwards to the server the redirect would have preserved.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import dns.message
import dns.query
import dns.rcode
import pytest

from septum.agent.l7.dnsanswers import AnswerFacts
from septum.agent.l7.dnsproxy import (
    DnsEvent,
    DnsListener,
    DnsProxy,
    DnsRequest,
    plain_upstream,
    serve,
)
from septum.dataplane import netns
from septum.dataplane.sandbox import GATEWAY_V4, Sandbox, sandbox_namespaces
from septum.operator.engine.rules import DnsRule

from .dnsserver import DnsServer, Record, query_from

pytestmark = pytest.mark.privileged

SERVER = "192.0.2.53"
POD_IP = "10.213.0.5"
ZONE = {
    "api.example.com": [Record("A", "203.0.113.10", ttl=30)],
    "a.b.example.com": [Record("A", "203.0.113.11", ttl=30)],
    "www.example.com": [Record("CNAME", "edge.cdn.example.net", ttl=20)],
    "edge.cdn.example.net": [Record("A", "203.0.113.12", ttl=90)],
    "evil.example.org": [Record("A", "203.0.113.66")],
}


@dataclass
class World:
    box: Sandbox
    pod_ns: str
    server: DnsServer


@pytest.fixture
def world() -> Iterator[World]:
    prefix = f"sl7d{secrets.token_hex(2)}"
    box = Sandbox(prefix)
    server: DnsServer | None = None
    try:
        pod = box.add_pod("a", POD_IP)
        outside = box.add_outside("dns", f"{prefix}up", "192.0.2.1", [SERVER])
        server = DnsServer(outside, SERVER, ZONE)
        yield World(box, pod.name, server)
    finally:
        if server is not None:
            server.close()
        box.close()
        assert sandbox_namespaces(prefix) == [], "network namespaces left behind"


@dataclass
class Running:
    listener: DnsListener
    events: list[DnsEvent]
    learned: list[AnswerFacts]
    learn_done: threading.Event


async def _start(world: World, rules: list[DnsRule]) -> Running:
    events: list[DnsEvent] = []
    learned: list[AnswerFacts] = []
    done = threading.Event()

    async def learn(request: DnsRequest, answer: AnswerFacts) -> None:
        # A slow policy update: the pod must still not see the answer before it is done.
        await asyncio.sleep(0.2)
        learned.append(answer)
        done.set()

    def upstream(request: DnsRequest) -> socket.socket:
        with netns.entered(world.box.node_ns):
            return plain_upstream(request)

    proxy = DnsProxy(lambda request: rules, learn=learn, observe=events.append, upstream=upstream)
    with netns.entered(world.box.node_ns):
        listener = await serve(proxy, "0.0.0.0", 0, lambda client, local: (SERVER, 53))
    return Running(listener, events, learned, done)


@pytest.fixture
async def running(world: World, request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    rules: list[DnsRule] = request.param
    run = await _start(world, rules)
    try:
        yield run
    finally:
        await run.listener.close()


def _ask(world: World, port: int, name: str, tcp: bool = False) -> dns.message.Message:
    return query_from(world.pod_ns, (GATEWAY_V4, port), name, tcp)


async def ask(world: World, run: Running, name: str, tcp: bool = False) -> dns.message.Message:
    return await asyncio.to_thread(_ask, world, run.listener.address[1], name, tcp)


def _addresses(message: dns.message.Message) -> set[str]:
    return {r.address for rrset in message.answer if rrset.rdtype == 1 for r in rrset}


BY_NAME = [DnsRule(match_name="API.example.com")]
BY_PATTERN = [DnsRule(match_pattern="**.example.com"), DnsRule(match_name="www.example.com")]


@pytest.mark.parametrize("running", [BY_NAME], indirect=True)
@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
async def test_allowed_by_name_is_forwarded_denied_is_refused(
    world: World, running: Running, tcp: bool
) -> None:
    allowed = await ask(world, running, "api.example.com.", tcp)
    assert allowed.rcode() == dns.rcode.NOERROR
    assert _addresses(allowed) == {"203.0.113.10"}
    denied = await ask(world, running, "evil.example.org", tcp)
    assert denied.rcode() == dns.rcode.REFUSED
    assert not denied.answer
    transport = "tcp" if tcp else "udp"
    # The refused name never reached the server; the allowed one did, over the pod's transport.
    assert world.server.queries == [(transport, "api.example.com.")]
    verdicts = [(e.query.name, e.is_response, e.allowed, e.rcode) for e in running.events]
    assert verdicts == [
        ("api.example.com.", False, True, 0),
        ("api.example.com.", True, True, dns.rcode.NOERROR),
        ("evil.example.org.", False, False, 0),
        ("evil.example.org.", True, False, dns.rcode.REFUSED),
    ]
    request = running.events[0].request
    assert request.client[0] == POD_IP and request.server == (SERVER, 53)
    assert request.transport == transport


@pytest.mark.parametrize("running", [BY_PATTERN], indirect=True)
async def test_patterns_select_by_cilium_wildcards(world: World, running: Running) -> None:
    assert (await ask(world, running, "a.b.example.com")).rcode() == dns.rcode.NOERROR
    assert (await ask(world, running, "api.example.com")).rcode() == dns.rcode.NOERROR
    # `**.` needs at least one label before the suffix
    assert (await ask(world, running, "example.com")).rcode() == dns.rcode.REFUSED
    assert (await ask(world, running, "evil.example.org")).rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize("running", [BY_PATTERN], indirect=True)
async def test_answer_released_only_after_learning(world: World, running: Running) -> None:
    seen_before_answer: list[bool] = []

    def ask_and_check() -> dns.message.Message:
        reply = _ask(world, running.listener.address[1], "www.example.com")
        seen_before_answer.append(running.learn_done.is_set())
        return reply

    reply = await asyncio.to_thread(ask_and_check)
    assert seen_before_answer == [True]
    assert _addresses(reply) == {"203.0.113.12"}
    (answer,) = running.learned
    # The CNAME chain: the address is learned for both names, with the chain's lowest TTL.
    assert answer.names == ("www.example.com.", "edge.cdn.example.net.")
    assert answer.addresses == ((ipaddress.ip_address("203.0.113.12"), 20),)
    assert answer.cnames == ("edge.cdn.example.net.",)
    assert answer.rrtypes == ("CNAME", "A")


@pytest.mark.parametrize("running", [BY_NAME], indirect=True)
async def test_unreachable_server_is_servfail(world: World, running: Running) -> None:
    world.server.close()
    proxy_events = running.events
    proxy = DnsProxy(lambda r: BY_NAME, observe=proxy_events.append, timeout_s=0.5)
    request = DnsRequest((POD_IP, 5353), ("192.0.2.99", 53), "udp")
    wire = dns.message.make_query("api.example.com", "A").to_wire()
    with netns.entered(world.box.node_ns):
        reply = await proxy.answer(request, wire)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
    assert proxy_events[-1].rcode == dns.rcode.SERVFAIL
