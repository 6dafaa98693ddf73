"""The node's DNS proxy: pods' queries to their DNS servers, over UDP and TCP.

Each query is checked against the `rules.dns` of the port it was sent to (Cilium's
semantics, septum.operator.engine.fqdn). A denied query is answered REFUSED by the
proxy itself (Cilium's default `--tofqdns-dns-reject-response-code`); an allowed one
is forwarded to the server the pod asked (its original destination). The answer's
addresses are handed to `learn` and the proxy waits for it before the pod sees the
answer: the policy that lets the pod reach those addresses is in place before the
pod can know them.

Transport details (how the original destination is recovered, how the upstream
socket is attributed to the pod) are the caller's: `Upstream` opens the socket.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

import dns.exception
import dns.message
import dns.rcode

from septum.agent.l7.dnsanswers import AnswerFacts, QueryFacts, answer_facts, query_facts
from septum.operator.engine.fqdn import dns_allowed
from septum.operator.engine.rules import DnsRule

log = logging.getLogger(__name__)

Address = tuple[str, int]
Transport = Literal["udp", "tcp"]
# Cilium's DNS proxy gives an upstream server this long before answering SERVFAIL.
UPSTREAM_TIMEOUT_S = 10.0
_MAX_UDP = 65535


@dataclass(frozen=True, slots=True)
class DnsRequest:
    client: Address  # the pod's address and port
    server: Address  # the DNS server the pod sent the query to
    transport: Transport


@dataclass(frozen=True, slots=True)
class DnsEvent:
    """One observation for flows and metrics: a query (request) or its answer (response)."""

    request: DnsRequest
    query: QueryFacts
    allowed: bool
    is_response: bool
    answer: AnswerFacts | None = None
    rcode: int = 0
    latency_s: float = 0.0
    timestamp_s: float = field(default_factory=time.time)


class DnsRules(Protocol):
    def __call__(self, request: DnsRequest) -> Sequence[DnsRule]: ...


Learn = Callable[[DnsRequest, AnswerFacts], Awaitable[None]]
Observe = Callable[[DnsEvent], None]


class Upstream(Protocol):
    """Opens the proxy's socket towards the pod's DNS server (attributed to the pod)."""

    def __call__(self, request: DnsRequest) -> socket.socket: ...


def plain_upstream(request: DnsRequest) -> socket.socket:
    """An unmarked socket: for tests and for a proxy that is not behind the redirect."""
    family = socket.AF_INET6 if ":" in request.server[0] else socket.AF_INET
    kind = socket.SOCK_DGRAM if request.transport == "udp" else socket.SOCK_STREAM
    sock = socket.socket(family, kind)
    sock.setblocking(False)
    return sock


async def _no_learning(request: DnsRequest, answer: AnswerFacts) -> None:
    return None


def _ignore(event: DnsEvent) -> None:
    return None


class DnsProxy:
    """Decides, forwards, learns and reports; the UDP and TCP fronts below feed it."""

    def __init__(
        self,
        rules: DnsRules,
        *,
        learn: Learn = _no_learning,
        observe: Observe = _ignore,
        upstream: Upstream = plain_upstream,
        timeout_s: float = UPSTREAM_TIMEOUT_S,
    ) -> None:
        self._rules = rules
        self._learn = learn
        self._observe = observe
        self._upstream = upstream
        self._timeout_s = timeout_s

    async def answer(self, request: DnsRequest, wire: bytes) -> bytes | None:
        """The bytes to send back to the pod, or None for a message that is no query."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        facts = query_facts(query)
        allowed = bool(facts.name) and dns_allowed(self._rules(request), facts.name)
        self._observe(DnsEvent(request, facts, allowed, is_response=False))
        started = time.monotonic()
        if not allowed:
            return self._local_answer(request, query, facts, dns.rcode.REFUSED, started)
        try:
            reply_wire = await asyncio.wait_for(self._forward(request, wire), self._timeout_s)
            reply = dns.message.from_wire(reply_wire)
        except (OSError, TimeoutError, dns.exception.DNSException, EOFError) as err:
            log.info("DNS upstream %s failed for %s: %s", request.server, facts.name, err)
            return self._local_answer(request, query, facts, dns.rcode.SERVFAIL, started)
        answer = answer_facts(reply)
        if answer.addresses:
            await self._learn(request, answer)
        self._observe(
            DnsEvent(
                request,
                facts,
                True,
                is_response=True,
                answer=answer,
                rcode=answer.rcode,
                latency_s=time.monotonic() - started,
            )
        )
        return reply_wire

    def _local_answer(
        self,
        request: DnsRequest,
        query: dns.message.Message,
        facts: QueryFacts,
        rcode: int,
        started: float,
    ) -> bytes:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.Rcode(rcode))
        allowed = rcode != dns.rcode.REFUSED
        self._observe(
            DnsEvent(
                request,
                facts,
                allowed,
                is_response=True,
                rcode=rcode,
                latency_s=time.monotonic() - started,
            )
        )
        wire: bytes = response.to_wire()
        return wire

    async def _forward(self, request: DnsRequest, wire: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        sock = self._upstream(request)
        try:
            if request.transport == "udp":
                await loop.sock_connect(sock, request.server)
                await loop.sock_sendall(sock, wire)
                while True:
                    reply = await loop.sock_recv(sock, _MAX_UDP)
                    if reply[:2] == wire[:2]:  # a stray datagram is not the answer
                        return reply
            await loop.sock_connect(sock, request.server)
            await loop.sock_sendall(sock, struct.pack("!H", len(wire)) + wire)
            (length,) = struct.unpack("!H", await _recv_exactly(loop, sock, 2))
            return await _recv_exactly(loop, sock, length)
        finally:
            sock.close()


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError("the DNS server closed the connection mid-message")
        data += chunk
    return data


OriginalDestination = Callable[[Address, Address], Address]


class _UdpFront(asyncio.DatagramProtocol):
    def __init__(self, proxy: DnsProxy, destination: OriginalDestination) -> None:
        self._proxy = proxy
        self._destination = destination
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        client = (str(addr[0]), int(addr[1]))
        local = self._transport.get_extra_info("sockname") if self._transport else None
        server = self._destination(client, (str(local[0]), int(local[1])) if local else ("", 0))
        task = asyncio.ensure_future(self._reply(DnsRequest(client, server, "udp"), data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reply(self, request: DnsRequest, data: bytes) -> None:
        reply = await self._proxy.answer(request, data)
        if reply is not None and self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(reply, request.client)


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class DnsListener:
    """The running fronts; `close()` stops both."""

    udp: Closable
    tcp: asyncio.Server | None
    address: Address

    async def close(self) -> None:
        self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
            await self.tcp.wait_closed()


def tcp_handler(
    proxy: DnsProxy, destination: OriginalDestination
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A stream server's callback: DNS over TCP (length-prefixed messages) on one connection."""

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        client = (str(peer[0]), int(peer[1]))
        request = DnsRequest(client, destination(client, (str(local[0]), int(local[1]))), "tcp")
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await proxy.answer(request, await reader.readexactly(length))
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return on_tcp


async def serve(
    proxy: DnsProxy,
    host: str,
    port: int,
    destination: OriginalDestination,
) -> DnsListener:
    """Listen on `host:port` over UDP and TCP (port 0: one free port for both)."""
    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(
        tcp_handler(proxy, destination), host, port, reuse_address=True
    )
    bound = tcp.sockets[0].getsockname()
    udp, _ = await loop.create_datagram_endpoint(
        lambda: _UdpFront(proxy, destination), local_addr=(host, int(bound[1]))
    )
    return DnsListener(udp, tcp, (str(bound[0]), int(bound[1])))


__all__ = [
    "UPSTREAM_TIMEOUT_S",
    "DnsEvent",
    "DnsListener",
    "DnsProxy",
    "DnsRequest",
    "DnsRules",
    "Learn",
    "Observe",
    "OriginalDestination",
    "Upstream",
    "plain_upstream",
    "serve",
    "tcp_handler",
]
