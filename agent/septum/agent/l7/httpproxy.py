"""The node's HTTP/1.1 proxy: asyncio on h11, for the connections the datapath redirects to it
(septum.dataplane.l7redirect).

Each accepted connection keeps its original destination as its own address; the proxy asks
`policy_for` for the HttpPolicy of (client, original destination) and decides every request
on it: an allowed request goes to the original destination over one upstream connection per
client connection (kept alive while both sides keep it), marked with the client's identity so
the server's L3/L4 policy decides it as the client's; a denied request is answered ``403``
with ``Access denied``, as Cilium's proxy does, and the connection stays usable.  Requests
are handled one at a time in the order they arrived, so pipelined requests get their answers
in order (h11 holds the next request until the current response is done).  Every request
gives an `HttpRecord` to `on_record` (the L7 flows), on the response or on the denial.

A connection that opens with the HTTP/2 preface is h2c with prior knowledge (gRPC's and
``curl --http2-prior-knowledge``'s way) and is served by septum.agent.l7.h2c with the same
rules per stream.  Not yet: h2c by ``Upgrade: h2c`` (such a request is answered over
HTTP/1.1, as the server would without the upgrade), bodies streamed (they are buffered whole)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import h11

from septum.agent.l7.httprules import HeaderAction, HttpPolicy, Mismatch, Request, Verdict
from septum.dataplane import l7redirect

log = logging.getLogger(__name__)

DENIED_BODY = b"Access denied\r\n"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_READ = 65536


@dataclass(frozen=True, slots=True)
class Connection:
    """One redirected client connection: who, and where it was going."""

    source: str
    source_port: int
    destination: str
    destination_port: int


@dataclass(frozen=True, slots=True)
class HttpRecord:
    """One request as the L7 flows report it."""

    connection: Connection
    method: str
    url: str
    protocol: str  # "HTTP/1.1" or "HTTP/2"
    headers: tuple[tuple[str, str], ...]
    allowed: bool
    code: int  # the response's status (403 when denied, 0 when upstream failed)
    latency_ns: int  # request received -> response headers (0 when denied)
    rule_index: int


PolicyFor = Callable[[Connection], HttpPolicy | None]
IdentityFor = Callable[[Connection], int]


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)


def _apply(
    headers: list[tuple[bytes, bytes]], actions: tuple[HeaderAction, ...]
) -> list[tuple[bytes, bytes]]:
    out = list(headers)
    for action in actions:
        name = action.name.lower().encode("latin-1")
        value = action.value.encode("latin-1")
        if action.action is Mismatch.LOG:
            log.info("HTTP header %s mismatch (logged, as the rule asks)", action.name)
        elif action.action is Mismatch.ADD:
            out.append((name, value))
        elif action.action is Mismatch.DELETE:
            out = [(k, v) for k, v in out if k.lower() != name]
        elif action.action is Mismatch.REPLACE:
            out = [(k, v) for k, v in out if k.lower() != name] + [(name, value)]
    return out


class _Upstream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


class HttpProxy:
    def __init__(
        self,
        policy_for: PolicyFor,
        identity_for: IdentityFor,
        *,
        ingress: bool,
        ns: str | None = None,
        on_record: Callable[[HttpRecord], None] | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._policy_for = policy_for
        self._identity_for = identity_for
        self._ingress = ingress
        self._ns = ns
        self._on_record = on_record
        self._connect_timeout_s = connect_timeout_s
        self._servers: list[asyncio.Server] = []

    async def serve(self, listener: socket.socket) -> asyncio.Server:
        """Serve a listener of l7redirect.open_listener until the returned server is closed."""
        server = await asyncio.start_server(self._handle, sock=listener)
        self._servers.append(server)
        return server

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        source = writer.get_extra_info("peername")
        destination = writer.get_extra_info("sockname")
        conn = Connection(source[0], source[1], destination[0], destination[1])
        upstream: _Upstream | None = None
        try:
            first = await self._opening(reader)
            if first.startswith(H2_PREFACE):
                from septum.agent.l7.h2c import serve_h2c

                await serve_h2c(self, conn, reader, writer, first)
                return
            upstream = await self._serve_connection(conn, reader, writer, first)
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError) as err:
            log.debug("HTTP connection %s ended: %s", conn, err)
        finally:
            if upstream:
                upstream.close()
            writer.close()

    @staticmethod
    async def _opening(reader: asyncio.StreamReader) -> bytes:
        """The first bytes, enough to tell the HTTP/2 preface from an HTTP/1.1 request."""
        data = b""
        while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
            chunk = await reader.read(_READ)
            if not chunk:
                break
            data += chunk
        return data

    def decide(self, conn: Connection, request: Request) -> Verdict | None:
        """The verdict of the connection's policy (None: no policy, so nothing is allowed)."""
        policy = self._policy_for(conn)
        return policy.decide(request) if policy else None

    async def _next_event(self, h: h11.Connection, reader: asyncio.StreamReader) -> object:
        while True:
            event = h.next_event()
            if event is not h11.NEED_DATA:
                return event
            h.receive_data(await reader.read(_READ))

    async def _serve_connection(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes,
    ) -> _Upstream | None:
        down = h11.Connection(h11.SERVER)
        down.receive_data(first)
        upstream: _Upstream | None = None
        while True:
            event = await self._next_event(down, reader)
            if isinstance(event, h11.ConnectionClosed):
                return upstream
            if not isinstance(event, h11.Request):
                raise h11.ProtocolError(f"unexpected {type(event).__name__}")
            request = event
            body = b""
            while not isinstance(part := await self._next_event(down, reader), h11.EndOfMessage):
                if isinstance(part, h11.Data):
                    body += part.data
            started = time.monotonic_ns()
            headers = _headers(request.headers)
            host = next((v for k, v in headers if k.lower() == "host"), "")
            target = request.target.decode("latin-1")
            path = target.split("?", 1)[0] if target.startswith("/") else target
            verdict = self.decide(conn, Request(request.method.decode(), path, host, headers))
            method = request.method.decode()
            url = f"http://{host or conn.destination}{target}"
            if verdict is None or not verdict.allowed:
                await self._send(
                    down,
                    writer,
                    h11.Response(
                        status_code=403,
                        headers=[
                            (b"content-length", str(len(DENIED_BODY)).encode()),
                            (b"content-type", b"text/plain"),
                        ],
                    ),
                    h11.Data(data=DENIED_BODY),
                    h11.EndOfMessage(),
                )
                self.record(conn, method, url, "HTTP/1.1", headers, False, 403, 0, -1)
            else:
                if upstream is None or upstream.conn.our_state is not h11.IDLE:
                    if upstream:
                        upstream.close()
                    upstream = await self._connect(conn)
                code = await self._forward(
                    upstream, down, writer, request, body, verdict.actions, started
                )
                self.record(
                    conn,
                    method,
                    url,
                    "HTTP/1.1",
                    headers,
                    True,
                    code,
                    time.monotonic_ns() - started,
                    verdict.rule_index,
                )
                if upstream.conn.our_state is h11.DONE and upstream.conn.their_state is h11.DONE:
                    upstream.conn.start_next_cycle()
            if down.our_state is h11.MUST_CLOSE or down.their_state is h11.MUST_CLOSE:
                return upstream
            down.start_next_cycle()

    async def _connect(self, conn: Connection) -> _Upstream:
        return _Upstream(*await self.connect_upstream(conn))

    async def connect_upstream(
        self, conn: Connection
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the original destination, marked with the client's identity."""
        sock = l7redirect.open_upstream(
            conn.destination, self._identity_for(conn), ingress=self._ingress, ns=self._ns
        )
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.sock_connect(sock, (conn.destination, conn.destination_port)),
                self._connect_timeout_s,
            )
        except (OSError, TimeoutError):
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _forward(
        self,
        upstream: _Upstream,
        down: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        body: bytes,
        actions: tuple[HeaderAction, ...],
        started: int,
    ) -> int:
        headers = _apply(list(request.headers), actions)
        await self._send(
            upstream.conn,
            upstream.writer,
            h11.Request(method=request.method, target=request.target, headers=headers),
            *([h11.Data(data=body)] if body else []),
            h11.EndOfMessage(),
        )
        response = await self._next_event(upstream.conn, upstream.reader)
        while isinstance(response, h11.InformationalResponse):
            response = await self._next_event(upstream.conn, upstream.reader)
        if not isinstance(response, h11.Response):
            raise ConnectionError("upstream closed before answering")
        out = h11.Response(
            status_code=response.status_code, headers=list(response.headers), reason=response.reason
        )
        writer.write(down.send(out) or b"")
        while not isinstance(
            part := await self._next_event(upstream.conn, upstream.reader), h11.EndOfMessage
        ):
            if isinstance(part, h11.Data):
                writer.write(down.send(h11.Data(data=part.data)) or b"")
        writer.write(down.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        return int(response.status_code)

    @staticmethod
    async def _send(h: h11.Connection, writer: asyncio.StreamWriter, *events: h11.Event) -> None:
        for event in events:
            writer.write(h.send(event) or b"")
        await writer.drain()

    def record(
        self,
        conn: Connection,
        method: str,
        url: str,
        protocol: str,
        headers: tuple[tuple[str, str], ...],
        allowed: bool,
        code: int,
        latency_ns: int,
        rule_index: int,
    ) -> None:
        if self._on_record:
            self._on_record(
                HttpRecord(
                    conn, method, url, protocol, headers, allowed, code, latency_ns, rule_index
                )
            )
