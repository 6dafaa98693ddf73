"""h2c (HTTP/2 over cleartext, prior knowledge) for the HTTP proxy, on the h2 library.

Each stream is one request, decided on the same rules as HTTP/1.1 (``:method``, ``:path``
without its query, ``:authority`` as the host, the other headers): a denied stream is
answered ``403`` with ``Access denied``, the connection and its other streams go on; an
allowed one is sent on an h2c connection to the original destination (one per client
connection, opened at the first allowed stream), and its response is relayed back.  Streams
are handled in the order they end, one at a time: simple, and responses are never reordered
within a stream.  Flow control: received data is acknowledged at once; a response body is
sent in frames no larger than the client's window allows, and one larger than its open window
waits for the client's WINDOW_UPDATE.

Limits (bodies are held whole, not streamed, so they are bounded): a request body is held
until its stream ends, at most ``REQUEST_BODY_MAX`` (1 MiB) per stream and
``CONNECTION_BODY_MAX`` (4 MiB) over all the connection's open streams; a stream going past
either is answered ``413`` and reset (NO_ERROR), the connection and its other streams go on.
The verdict is taken from the HEADERS, so a denied stream's body is dropped, never held.  A
response body over ``RESPONSE_BODY_MAX`` (4 MiB) resets the stream both ways (CANCEL upstream,
INTERNAL_ERROR to the client)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
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
    from septum.agent.l7.httprules import Verdict

REQUEST_BODY_MAX = 1024 * 1024
CONNECTION_BODY_MAX = 4 * 1024 * 1024
RESPONSE_BODY_MAX = 4 * 1024 * 1024
_READ = 65536
_DENIED = b"Access denied\r\n"
_TOO_LARGE = b"Request body too large\r\n"


@dataclass
class _Stream:
    headers: list[tuple[bytes, bytes]]
    verdict: Verdict | None
    body: bytearray = field(default_factory=bytearray)
    started: int = field(default_factory=time.monotonic_ns)

    @property
    def allowed(self) -> bool:
        return self.verdict is not None and self.verdict.allowed

    def request(self) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
        return _parts(self.headers)


def _get(headers: list[tuple[bytes, bytes]], name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in headers if k == name), "")


def _parts(headers: list[tuple[bytes, bytes]]) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    """method, target, host and the plain (non-pseudo) headers, as text."""
    plain = tuple(
        (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if not k.startswith(b":")
    )
    return _get(headers, b":method"), _get(headers, b":path"), _get(headers, b":authority"), plain


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
                    headers = list(event.headers)
                    method, target, host, plain = _parts(headers)
                    verdict = proxy.decide(
                        conn, Request(method, target.split("?", 1)[0], host, plain)
                    )
                    streams[event.stream_id] = _Stream(headers, verdict)
                elif isinstance(event, DataReceived):
                    down.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    stream = streams.get(event.stream_id)
                    if stream is None or not stream.allowed:
                        continue  # reset by us, or denied: its body is dropped
                    held = sum(len(s.body) for s in streams.values()) + len(event.data)
                    if (
                        len(stream.body) + len(event.data) > REQUEST_BODY_MAX
                        or held > CONNECTION_BODY_MAX
                    ):
                        _too_large(proxy, conn, down, event.stream_id, streams.pop(event.stream_id))
                        continue
                    stream.body += event.data
                    proxy.note_buffered(held)
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
    method, target, host, plain = stream.request()
    verdict = stream.verdict
    url = f"http://{host or conn.destination}{target}"
    if verdict is None or not verdict.allowed:
        _answer(down, sid, b"403", _DENIED)
        proxy.record(conn, method, url, "HTTP/2", plain, False, 403, 0, -1)
        return up
    if up is None:
        up = _Side(*await proxy.connect_upstream(conn), client_side=True)
        up.h2.initiate_connection()
    usid = up.h2.get_next_available_stream_id()
    up.h2.send_headers(usid, stream.headers, end_stream=not stream.body)
    await _send_body(up, usid, bytes(stream.body))
    status, headers, body = 0, [], bytearray()
    done = over = False
    while not done:
        events, up.backlog = up.backlog or await up.events(), []
        for event in events:
            if isinstance(event, ConnectionTerminated):
                raise ConnectionError("upstream closed the h2c connection")
            if isinstance(event, ResponseReceived) and event.stream_id == usid:
                headers = list(event.headers)
                status = int(_get(headers, b":status") or 0)
            elif isinstance(event, DataReceived):
                up.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id == usid and not over:
                    body += event.data
                    if len(body) > RESPONSE_BODY_MAX:
                        up.h2.reset_stream(usid, ErrorCodes.CANCEL)
                        down.h2.reset_stream(sid, ErrorCodes.INTERNAL_ERROR)
                        over = done = True
                        body.clear()
            elif isinstance(event, (StreamEnded, StreamReset)) and event.stream_id == usid:
                done = True
        await up.flush()
    if not over:
        down.h2.send_headers(sid, headers, end_stream=not body)
        await _send_body(down, sid, bytes(body))
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


async def _send_body(side: _Side, sid: int, body: bytes) -> None:
    """Send `body` (END_STREAM after it) in frames the peer's windows allow, waiting for its
    WINDOW_UPDATE when they are shut; other events read meanwhile go to ``side.backlog``."""
    while body:
        window = min(side.h2.local_flow_control_window(sid), side.h2.max_outbound_frame_size)
        if window <= 0:
            await side.flush()
            events = await side.events()  # wait for the peer's WINDOW_UPDATE
            if any(isinstance(event, ConnectionTerminated) for event in events):
                raise ConnectionError("the peer closed the h2c connection")
            side.backlog += [event for event in events if not isinstance(event, WindowUpdated)]
            if any(isinstance(e, StreamReset) and e.stream_id == sid for e in events):
                return  # the peer wants no more of it (it may have answered already)
            continue
        chunk, body = body[:window], body[window:]
        side.h2.send_data(sid, chunk, end_stream=not body)
    await side.flush()


def _too_large(proxy: HttpProxy, conn: Connection, down: _Side, sid: int, stream: _Stream) -> None:
    """Answer 413 before the request has ended, then reset it: a server may answer early and
    reset with NO_ERROR (RFC 9113 8.1); h2 drops, and counts against the connection window,
    the DATA the client still had in flight."""
    _answer(down, sid, b"413", _TOO_LARGE)
    down.h2.reset_stream(sid, ErrorCodes.NO_ERROR)
    method, target, host, plain = stream.request()
    rule_index = stream.verdict.rule_index if stream.verdict else -1
    proxy.record(
        conn,
        method,
        f"http://{host or conn.destination}{target}",
        "HTTP/2",
        plain,
        True,
        413,
        time.monotonic_ns() - stream.started,
        rule_index,
    )


def _answer(down: _Side, sid: int, status: bytes, text: bytes) -> None:
    """The proxy's own short plain-text response, ending the stream."""
    down.h2.send_headers(
        sid,
        [
            (b":status", status),
            (b"content-length", str(len(text)).encode()),
            (b"content-type", b"text/plain"),
        ],
    )
    down.h2.send_data(sid, text, end_stream=True)
