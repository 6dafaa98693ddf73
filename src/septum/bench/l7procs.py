"""The processes of `septum bench l7`, each started in its own network namespace (and so on
its own core when the machine has one free): a minimal HTTP/1.1 server, the HTTP proxy, and
the load generator.  ``python -m septum.bench.l7procs server|proxy|load ...``; the load
generator prints one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
_REQUEST = b"GET /bench/item HTTP/1.1\r\nhost: server\r\n\r\n"


class _Server(asyncio.Protocol):
    """Answers every request (no body) with a fixed 200: the cheapest peer there is."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.buffer = self.buffer[self.buffer.rindex(b"\r\n\r\n") + 4 :]
            self.transport.write(_RESPONSE * count)  # type: ignore[attr-defined]


async def _serve(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, address, port, backlog=4096)
    print("ready", flush=True)
    await server.serve_forever()


async def _proxy(port: int, identity: int) -> None:
    from septum.agent.l7.httpproxy import HttpProxy
    from septum.agent.l7.httprules import policy_from_fields
    from septum.dataplane import l7redirect

    policy = policy_from_fields([{"method": "GET", "path": "/bench/.*"}])
    proxy = HttpProxy(lambda conn: policy, lambda conn: identity, ingress=False)
    await proxy.serve(l7redirect.open_listener(port))
    print("ready", flush=True)
    await asyncio.Event().wait()


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_REQUEST)
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)


async def _closed_loop(
    address: str, port: int, connections: int, seconds: float, fresh: bool
) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        streams = None if fresh else await asyncio.open_connection(address, port)
        while time.monotonic() < deadline:
            if fresh:
                reader, writer = await asyncio.open_connection(address, port)
                await _one(reader, writer)
                writer.close()
            else:
                assert streams is not None
                await _one(*streams)
            done += 1
        if streams:
            streams[1].close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"requests": done, "seconds": time.monotonic() - started}


async def _open_loop(
    address: str, port: int, rate: int, seconds: float, connections: int
) -> dict[str, object]:
    """`rate` requests/s on a pool of keep-alive connections; latency of each."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(address, port))
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
    parser = argparse.ArgumentParser(prog="septum.bench.l7procs")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("address")
    server.add_argument("port", type=int)
    proxy = sub.add_parser("proxy")
    proxy.add_argument("port", type=int)
    proxy.add_argument("identity", type=int)
    proxy.add_argument("--uvloop", action="store_true", help="run the proxy on uvloop")
    load = sub.add_parser("load")
    load.add_argument("address")
    load.add_argument("port", type=int)
    load.add_argument("--seconds", type=float, default=3.0)
    load.add_argument("--connections", type=int, default=8)
    load.add_argument("--fresh", action="store_true", help="a new connection per request")
    load.add_argument("--rate", type=int, default=0, help="open loop at this rate")
    args = parser.parse_args(argv)
    if args.role == "server":
        asyncio.run(_serve(args.address, args.port))
    elif args.role == "proxy":
        if args.uvloop:
            import uvloop

            uvloop.run(_proxy(args.port, args.identity))
        else:
            asyncio.run(_proxy(args.port, args.identity))
    elif args.rate:
        out = asyncio.run(
            _open_loop(args.address, args.port, args.rate, args.seconds, args.connections)
        )
        print(json.dumps(out), flush=True)
    else:
        out = asyncio.run(
            _closed_loop(args.address, args.port, args.connections, args.seconds, args.fresh)
        )
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
