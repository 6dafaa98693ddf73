"""h2c (HTTP/2 over cleartext, prior knowledge) for the HTTP proxy, on the h2 library.

Each stream is one request, decided on the same rules as HTTP/1.1 (``:method``, ``:path``
without its query, ``:authority`` as the host, the other headers): a denied stream is
answered ``403`` with ``Access denied``, the connection and its other streams go on; an
allowed one is sent on an h2c connection to the original destination (one per client
connection, opened at the first allowed stream), and its response is relayed back.  Streams
are handled in the order they end, one at a time: simple, and responses are never reordered
within a stream.  Flow control: received data is acknowledged at once; a response body is
sent in frames no larger than the client's window allows, and one larger than its open window
waits for the client's WINDOW_UPDATE."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)

from septum.agent.l7.httprules import Request

if TYPE_CHECKING:
    from septum.agent.l7.httpproxy import Connection, HttpProxy

_READ = 65536
_DENIED = b"Access denied\r\n"


@dataclass
class _Stream:
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    started: int = field(default_factory=time.monotonic_ns)


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in headers if k == name), "")


class _Side:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client_side: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = H2Connection(H2Configuration(client_side=client_side, header_encoding=None))
        self.backlog: list[object] = []  # events read while waiting for a window, not yet handled

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)
            await self.writer.drain()

    async def events(self) -> list[object]:
        data = await self.reader.read(_READ)
        if not data:
            return [ConnectionTerminated()]
        return list(self.h2.receive_data(data))


async def serve_h2c(
    proxy: HttpProxy,
    conn: Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    first: bytes,
) -> None:
    down = _Side(reader, writer, client_side=False)
    down.h2.initiate_connection()
    up: _Side | None = None
    streams: dict[int, _Stream] = {}
    pending: list[object] = list(down.h2.receive_data(first))
    try:
        while True:
            for event in pending:
                if isinstance(event, ConnectionTerminated):
                    await down.flush()
                    return
                if isinstance(event, RequestReceived):
                    streams[event.stream_id] = _Stream(list(event.headers))
                elif isinstance(event, DataReceived):
                    streams[event.stream_id].body += event.data
                    down.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, StreamReset):
                    streams.pop(event.stream_id, None)
                if isinstance(event, StreamEnded) and event.stream_id in streams:
                    up = await _handle(
                        proxy, conn, down, up, event.stream_id, streams.pop(event.stream_id)
                    )
            await down.flush()
            pending, down.backlog = down.backlog, []
            if not pending:
                pending = await down.events()
    finally:
        if up:
            up.writer.close()


async def _handle(
    proxy: HttpProxy, conn: Connection, down: _Side, up: _Side | None, sid: int, stream: _Stream
) -> _Side | None:
    method = _get(stream.headers, b":method")
    target = _get(stream.headers, b":path")
    host = _get(stream.headers, b":authority")
    plain = tuple(
        (k.decode("latin-1"), v.decode("latin-1"))
        for k, v in stream.headers
        if not k.startswith(b":")
    )
    verdict = proxy.decide(conn, Request(method, target.split("?", 1)[0], host, plain))
    url = f"http://{host or conn.destination}{target}"
    if verdict is None or not verdict.allowed:
        down.h2.send_headers(
            sid,
            [
                (b":status", b"403"),
                (b"content-length", str(len(_DENIED)).encode()),
                (b"content-type", b"text/plain"),
            ],
        )
        down.h2.send_data(sid, _DENIED, end_stream=True)
        proxy.record(conn, method, url, "HTTP/2", plain, False, 403, 0, -1)
        return up
    if up is None:
        up = _Side(*await proxy.connect_upstream(conn), client_side=True)
        up.h2.initiate_connection()
    usid = up.h2.get_next_available_stream_id()
    up.h2.send_headers(usid, stream.headers, end_stream=not stream.body)
    if stream.body:
        up.h2.send_data(usid, stream.body, end_stream=True)
    await up.flush()
    status, headers, body = 0, [], b""
    done = False
    while not done:
        for event in await up.events():
            if isinstance(event, ConnectionTerminated):
                raise ConnectionError("upstream closed the h2c connection")
            if isinstance(event, ResponseReceived) and event.stream_id == usid:
                headers = list(event.headers)
                status = int(_get(headers, b":status") or 0)
            elif isinstance(event, DataReceived):
                up.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id == usid:
                    body += event.data
            elif isinstance(event, (StreamEnded, StreamReset)) and event.stream_id == usid:
                done = True
        await up.flush()
    down.h2.send_headers(sid, headers, end_stream=not body)
    await _send_body(down, sid, body)
    proxy.record(
        conn,
        method,
        url,
        "HTTP/2",
        plain,
        True,
        status,
        time.monotonic_ns() - stream.started,
        verdict.rule_index,
    )
    return up


async def _send_body(down: _Side, sid: int, body: bytes) -> None:
    while body:
        window = min(down.h2.local_flow_control_window(sid), down.h2.max_outbound_frame_size)
        if window <= 0:
            await down.flush()
            for event in await down.events():  # wait for the client's WINDOW_UPDATE
                if isinstance(event, ConnectionTerminated):
                    raise ConnectionError("client closed the h2c connection")
                if not isinstance(event, WindowUpdated):
                    down.backlog.append(event)  # the main loop handles it next
            continue
        chunk, body = body[:window], body[window:]
        down.h2.send_data(sid, chunk, end_stream=not body)
    await down.flush()
