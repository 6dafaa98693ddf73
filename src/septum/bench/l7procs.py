"""The Python processes of `septum bench l7` (the throughput load is wrk's), each started in
its own network namespace by septum.bench.nsprocs: a minimal HTTP/1.1 server, the HTTP proxy,
and the open-loop latency client.  ``python -m septum.bench.l7procs server|proxy|latency ...``;
server and proxy print "ready" once listening, the latency client one JSON line."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvloop

from septum.bench import nsprocs

if TYPE_CHECKING:
    from septum.agent.l7.httpproxy import HttpRecord

_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
_CLOSING = (
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n"
    b"connection: close\r\n\r\nok"
)
_REQUEST = b"GET /bench/item HTTP/1.1\r\nhost: server\r\n\r\n"
NODE = "bench-node"
RULE = 7  # the datapath rule id the bench's flows name as their deciding policy


class _Server(asyncio.Protocol):
    """Answers every request (no body) with a fixed 200: the cheapest peer there is.  A
    request asking ``connection: close`` is answered so and the connection closed (wrk's
    new-connection-per-request runs)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if not count:
            return
        closing = b"connection: close" in self.buffer.lower()
        self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
        if closing:
            self.transport.write(_RESPONSE * (count - 1) + _CLOSING)  # type: ignore[attr-defined]
            self.transport.close()
        else:
            self.transport.write(_RESPONSE * count)  # type: ignore[attr-defined]


async def _serve(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, address, port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


def _publisher(client: str, server: str) -> Callable[[HttpRecord], None]:
    """The records' way into Hubble flows as the agent's (daemon.py): both pods known to the
    node's metadata (the flows' endpoints), each flow naming its deciding policy (the rule of
    the connection, memoised per policy revision), into the node's flow ring, with the
    hubble_http_* metrics."""
    from prometheus_client import CollectorRegistry

    from septum.agent.l7.l7flows import L7FlowPublisher, per_revision
    from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
    from septum.dataplane.observe.metadata import EndpointInfo, PolicyInfo, StaticMetadata
    from septum.dataplane.observe.ring import FlowRing

    policy = PolicyInfo("bench-l7", "default", "CiliumNetworkPolicy")
    metadata = StaticMetadata(policies={RULE: policy})
    for endpoint_id, (name, ip) in enumerate((("client", client), ("server", server)), 1):
        labels = (f"k8s:app={name}", "k8s:io.kubernetes.pod.namespace=default")
        metadata.add_endpoint(
            EndpointInfo(endpoint_id, 1000 + endpoint_id, "default", name, labels, ips=(ip,))
        )
    ring = FlowRing(FlowDecoder(metadata, DecoderConfig(node_name=NODE)))
    publisher = L7FlowPublisher(
        ring,
        node_name=NODE,
        metadata=metadata,
        registry=CollectorRegistry(),
        rule_of=per_revision(lambda *connection: RULE, lambda: 1),
    )
    return publisher.http_hook(ingress=False)


async def _proxy(port: int, identity: int, flows: tuple[str, str] | None) -> None:
    # Imported here: the server and the latency client need none of the agent.
    from septum.agent.l7.httpproxy import HttpProxy
    from septum.agent.l7.httprules import policy_from_fields
    from septum.dataplane import l7redirect

    policy = policy_from_fields([{"method": "GET", "path": "/bench/.*"}])
    on_record = _publisher(*flows) if flows else None
    proxy = HttpProxy(
        lambda conn: policy, lambda conn: identity, ingress=False, on_record=on_record
    )
    await proxy.serve(l7redirect.open_listener(port))
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_REQUEST)
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)


async def _open_loop(
    address: str, port: int, rate: int, seconds: float, connections: int
) -> dict[str, object]:
    """`rate` requests/s on a pool of keep-alive connections; latency of each."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        streams = await asyncio.open_connection(address, port)
        await _one(*streams)  # warm: the proxy's upstream connection is made before timing
        pool.put_nowait(streams)
    latencies: list[float] = []
    late = 0

    async def request() -> None:
        streams = await pool.get()
        begun = time.perf_counter()
        await _one(*streams)
        latencies.append(time.perf_counter() - begun)
        pool.put_nowait(streams)

    tasks = []
    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            late += 1
        tasks.append(asyncio.ensure_future(request()))
    await asyncio.gather(*tasks)
    return {"latencies_s": latencies, "late": late, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> None:
    parser, proxy, latency = nsprocs.role_parser("septum.bench.l7procs", "latency")
    proxy.add_argument("--asyncio", action="store_true", help="asyncio's own loop, not uvloop")
    proxy.add_argument(
        "--flows",
        nargs=2,
        metavar=("CLIENT", "SERVER"),
        help="build the agent's Hubble flows of every record (the pods' addresses)",
    )
    latency.add_argument("--connections", type=int, default=16)
    latency.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.role == "server":
        uvloop.run(_serve(args.address, args.port))
    elif args.role == "proxy":
        run = asyncio.run if args.asyncio else uvloop.run
        run(_proxy(args.port, args.identity, tuple(args.flows) if args.flows else None))
    else:
        out = uvloop.run(
            _open_loop(args.address, args.port, args.rate, args.seconds, args.connections)
        )
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
