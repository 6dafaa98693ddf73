"""One HTTP/2 connection on the front's event loop: h2 state, send queue, gRPC helpers.

Both sides of the front use it: the public connections (server side) and the
connection to the private grpcio server (client side). DATA waits in a
per-stream queue until the peer's flow-control window takes it; a flush turns
everything the windows allow into frames and hands them to the socket in one
write, so many small gRPC messages become a few large DATA frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# Our receive windows: large, so a peer is never throttled by us (what we
# receive is forwarded or acknowledged promptly; requests are small).
RECEIVE_WINDOW = 1 << 24
# gRPC status codes the front itself answers with.
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 12, 13, 14
GRPC_CONTENT_TYPE = b"application/grpc"


def grpc_message_header(message: str) -> bytes:
    """grpc-message is percent-encoded outside printable ASCII (gRPC over HTTP/2 spec)."""
    out = bytearray()
    for byte in message.encode():
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def status_trailers(code: int, message: str = "") -> Headers:
    trailers = [(b"grpc-status", str(code).encode())]
    if message:
        trailers.append((b"grpc-message", grpc_message_header(message)))
    return trailers


_TIMEOUT_UNITS_S = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def parse_grpc_timeout(value: bytes) -> float | None:
    """Seconds from a grpc-timeout header ("100m", "5S"), None if malformed."""
    unit = _TIMEOUT_UNITS_S.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None
    return int(digits) * unit


_C = h2.connection.ConnectionState
_IN = h2.connection.ConnectionInputs


class _GracefulStateMachine(h2.connection.H2ConnectionStateMachine):
    """h2's connection states, with a GOAWAY that ends only new streams.

    h2 treats any GOAWAY, sent or received, as the end of the connection: every
    later frame (a PING, the DATA of a stream still running) is a protocol
    error. RFC 9113 6.8 says the streams up to the GOAWAY's last stream id
    carry on, so a server that is stopping can say GOAWAY first and let its
    calls finish (we, on the public side), and the client of such a server
    keeps reading them (we, towards grpcio, which says GOAWAY then PING when
    it stops). A GOAWAY received by a server still ends its connection.
    """

    _transitions = {
        **h2.connection.H2ConnectionStateMachine._transitions,
        (_C.IDLE, _IN.SEND_GOAWAY): (None, _C.IDLE),
        (_C.SERVER_OPEN, _IN.SEND_GOAWAY): (None, _C.SERVER_OPEN),
        (_C.CLIENT_OPEN, _IN.RECV_GOAWAY): (None, _C.CLIENT_OPEN),
    }


@dataclass
class _Queue:
    """DATA for one stream that the peer's window has not taken yet."""

    chunks: deque[bytes] = field(default_factory=deque)
    size: int = 0
    finish: bool = False  # end the stream once the chunks are out
    trailers: Headers | None = None
    # Told how many bytes left (the proxy acknowledges them to the other side).
    on_sent: Callable[[int], None] | None = None


class H2Link(asyncio.Protocol):
    """An h2 connection bound to an asyncio transport, with flow-controlled sending."""

    def __init__(self, client_side: bool) -> None:
        config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.state_machine = _GracefulStateMachine()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.paused = False  # the transport's buffer is full: produce nothing more
        self._queues: dict[int, _Queue] = {}

    # ---- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.local_settings = h2.settings.Settings(
            client=self.conn.config.client_side,
            initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams(),
            },
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(RECEIVE_WINDOW)
        self.write_pending()

    def max_concurrent_streams(self) -> int:
        # Generous per connection: the server-wide limit (listen.max_streams) is
        # enforced per call with RESOURCE_EXHAUSTED, as grpcio does, instead of
        # making clients queue calls silently.
        return 1 << 10

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as err:
            log.info("HTTP/2 protocol error from peer, closing the connection: %s", err)
            self.write_pending()  # h2 queued a GOAWAY
            self.close()
            return
        for event in events:
            self.handle_event(event)
            if self.closed:
                return
        self.write_pending()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        # Not from inside the transport's write handler: a write there that
        # fails makes asyncio (3.11) report the connection lost twice.
        asyncio.get_running_loop().call_soon(self._resumed)

    def _resumed(self) -> None:
        if not self.paused and not self.closed:
            self.writable()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        for stream_id in list(self._queues):
            self._drop(stream_id)
        self.lost()

    # ---- for subclasses --------------------------------------------------
    def handle_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.flush()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()

    def writable(self) -> None:
        """Windows opened or the transport drained: producers may continue."""

    def lost(self) -> None:
        """The connection is gone: release every stream."""

    # ---- sending ----------------------------------------------------------
    def write_pending(self) -> None:
        data = self.conn.data_to_send()
        transport = self.transport
        if data and transport is not None and not self.closed and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def pending(self, stream_id: int) -> int:
        queue = self._queues.get(stream_id)
        return queue.size if queue is not None else 0

    def window(self, stream_id: int) -> int:
        """What the peer would take on this stream now, minus what already waits."""
        try:
            window = self.conn.local_flow_control_window(stream_id)
        except h2.exceptions.ProtocolError:
            return 0
        return window - self.pending(stream_id)

    def send_headers(self, stream_id: int, headers: Headers, end_stream: bool = False) -> None:
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError:  # the stream or connection closed meanwhile
            return
        self.write_pending()

    def send(
        self, stream_id: int, data: bytes, on_sent: Callable[[int], None] | None = None
    ) -> None:
        """Queue DATA for the stream and send what the windows allow."""
        queue = self._queues.setdefault(stream_id, _Queue())
        if on_sent is not None:
            queue.on_sent = on_sent
        if data:
            queue.chunks.append(data)
            queue.size += len(data)
        self._flush_stream(stream_id, queue)
        self.write_pending()

    def finish(self, stream_id: int, trailers: Headers | None = None) -> None:
        """End the stream (with trailers, if given) once its queued DATA is out."""
        queue = self._queues.setdefault(stream_id, _Queue())
        queue.finish = True
        queue.trailers = trailers
        self._flush_stream(stream_id, queue)
        self.write_pending()

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        self._drop(stream_id)
        try:
            self.conn.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:  # incl. StreamClosedError
            return
        self.write_pending()

    def forget(self, stream_id: int) -> None:
        """The peer reset the stream: drop what waits for it."""
        self._drop(stream_id)

    def _drop(self, stream_id: int, already_sent: int = 0) -> None:
        """Forget a stream's queue, still reporting its bytes as gone.

        A relayed stream acknowledges DATA to the other connection only through
        on_sent: bytes dropped without it would shrink that connection's
        receive window for good, and once it reaches zero every relayed call on
        the connection hangs.
        """
        queue = self._queues.pop(stream_id, None)
        if queue is None:
            return
        dropped = already_sent + sum(len(chunk) for chunk in queue.chunks)
        queue.chunks.clear()
        queue.size = 0
        if dropped and queue.on_sent is not None:
            queue.on_sent(dropped)

    def flush(self) -> None:
        """Send whatever the (new) windows allow on every stream, then let producers run."""
        for stream_id, queue in list(self._queues.items()):
            self._flush_stream(stream_id, queue)
        self.write_pending()
        self.writable()

    def _flush_stream(self, stream_id: int, queue: _Queue) -> None:
        conn = self.conn
        sent = 0
        try:
            while queue.chunks:
                window = conn.local_flow_control_window(stream_id)
                if window <= 0:
                    break
                room = min(window, conn.max_outbound_frame_size)
                chunk = queue.chunks[0]
                if len(chunk) <= room:
                    queue.chunks.popleft()
                else:
                    queue.chunks[0] = chunk[room:]
                    chunk = chunk[:room]
                conn.send_data(stream_id, chunk)
                sent += len(chunk)
            queue.size -= sent
            if not queue.chunks and queue.finish:
                del self._queues[stream_id]
                if queue.trailers is not None:
                    conn.send_headers(stream_id, queue.trailers, end_stream=True)
                else:
                    conn.end_stream(stream_id)
        except h2.exceptions.ProtocolError as err:
            # Usually the stream closed meanwhile (StreamClosedError); anything
            # else is a bug in how we drive h2, so say so.
            level = (
                logging.DEBUG
                if isinstance(err, h2.exceptions.StreamClosedError)
                else logging.WARNING
            )
            log.log(level, "HTTP/2 stream %d: dropping what waits to be sent: %r", stream_id, err)
            self._queues[stream_id] = queue  # _drop credits what was sent and what waited
            self._drop(stream_id, already_sent=sent)
            return
        if sent and queue.on_sent is not None:
            queue.on_sent(sent)


def grpc_frames(messages: Iterable[bytes]) -> bytes:
    """Length-prefixed gRPC messages (uncompressed), concatenated."""
    parts: list[bytes] = []
    for message in messages:
        parts.append(b"\x00" + len(message).to_bytes(4, "big"))
        parts.append(message)
    return b"".join(parts)
