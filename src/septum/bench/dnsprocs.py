"""The processes of the DNS part of `septum bench l7`, each in its own network namespace: a
DNS server answering one A record, the DNS proxy behind the redirect, and the load
generator. ``python -m septum.bench.dnsprocs server|proxy|load ...``; the server and the
proxy print "ready" once listening, the load generator one JSON line."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import dns.message
import dns.rrset

from septum.bench import nsprocs

ANSWER = "203.0.113.10"
NAME = "api.example.com."


class _Server(asyncio.DatagramProtocol):
    """Answers every query with one A record (dnspython both ways, as a real server parses)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        name = query.question[0].name
        reply.answer.append(dns.rrset.from_text(name, 60, "IN", "A", ANSWER))
        self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]


async def _serve(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(_Server, local_addr=(address, port))
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _proxy(port: int, identity: int) -> None:
    # Imported here: the server and the load generator need none of the agent.
    from septum.agent.l7.dnsanswers import AnswerFacts
    from septum.agent.l7.dnsproxy import DnsProxy, DnsRequest
    from septum.agent.l7.dnsredirect import marked_upstream, serve_redirected
    from septum.agent.l7.fqdncache import FqdnCache
    from septum.operator.engine.rules import DnsRule

    cache = FqdnCache()
    rules = [DnsRule(match_pattern="*.example.com")]

    async def learn(request: DnsRequest, answer: AnswerFacts) -> None:
        for name in answer.names:  # the agent's bookkeeping, without a policy update
            cache.learn(request.client[0], name, answer.addresses, time.time())

    proxy = DnsProxy(
        lambda request: rules, learn=learn, upstream=marked_upstream(lambda ip: identity, None)
    )
    await serve_redirected(proxy, port)
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _load(address: str, port: int, seconds: float, clients: int) -> dict[str, float]:
    """`clients` sockets, each with one query outstanding, for `seconds`: answers/s."""
    loop = asyncio.get_running_loop()
    wire = dns.message.make_query(NAME, "A").to_wire()
    answers = 0
    timeouts = 0
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal answers, timeouts
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, (address, port))
        try:
            while time.perf_counter() < stop_at:
                await loop.sock_sendall(sock, wire)
                try:
                    await asyncio.wait_for(loop.sock_recv(sock, 4096), 1.0)
                    answers += 1
                except TimeoutError:
                    timeouts += 1
        finally:
            sock.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return {"answers": answers, "timeouts": timeouts, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser, _, load = nsprocs.role_parser("septum.bench.dnsprocs", "load")
    load.add_argument("--clients", type=int, default=16)
    args = parser.parse_args(argv)
    if args.role == "server":
        asyncio.run(_serve(args.address, args.port))
    elif args.role == "proxy":
        import uvloop  # as the HTTP proxy of the same bench

        uvloop.run(_proxy(args.port, args.identity))
    else:
        result = asyncio.run(_load(args.address, args.port, args.seconds, args.clients))
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
