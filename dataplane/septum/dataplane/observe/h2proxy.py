"""Every RPC but GetFlows, passed stream-for-stream to the private grpcio server.

ServerStatus, GetNodes, GetNamespaces, agent/debug events, peer.Peer/Notify,
health and reflection stay grpcio handlers; the front relays their HTTP/2
streams unchanged: request headers (metadata, grpc-timeout), DATA in both
directions, response headers, trailers and resets. DATA received on one side
is acknowledged to its sender only once the other side's window has taken it,
so flow control holds end to end. Each public connection gets its own
connection to grpcio, opened on its first proxied stream and closed with it.

A GOAWAY from grpcio (it sends one, then a PING, when it begins to stop)
means "no new streams here": the streams it covers run to their end, the
connection closes once the last one is done, and the next relayed call opens
a fresh connection (h2link's state machine keeps the connection open for
that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import h2.errors
import h2.events

from septum.dataplane.observe import h2link as hl

log = logging.getLogger(__name__)

# Connection-specific headers HTTP/2 forbids forwarding (RFC 9113 8.2.2).
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"upgrade"})


class Upstream(hl.H2Link):
    """The client side of one connection to the private grpcio server."""

    def __init__(self, loop: asyncio.AbstractEventLoop, socket_path: str) -> None:
        super().__init__(client_side=True)
        self.ready = False
        self.draining = False  # grpcio sent GOAWAY: no new streams on this connection
        self.members: set[ProxyStream] = set()  # every stream relayed over this connection
        self.by_id: dict[int, ProxyStream] = {}
        self._queued: list[Callable[[], None]] = []
        self._task = loop.create_task(self._connect(loop, socket_path))

    async def _connect(self, loop: asyncio.AbstractEventLoop, socket_path: str) -> None:
        try:
            await loop.create_unix_connection(lambda: self, socket_path)
        except OSError as err:
            log.warning(
                "Observer front: cannot reach the grpcio server at %s: %s", socket_path, err
            )
            self.closed = True
            self.lost()
            return
        self.ready = True
        queued, self._queued = self._queued, []
        for action in queued:
            action()
        self.write_pending()

    def run(self, action: Callable[[], None]) -> None:
        """Do `action` now if connected, else once the connection is up."""
        if self.closed:
            return
        if self.ready:
            action()
        else:
            self._queued.append(action)

    def handle_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event)
            return
        stream_id = getattr(event, "stream_id", None)
        stream = self.by_id.get(stream_id) if stream_id is not None else None
        if stream is None:
            if isinstance(event, h2.events.DataReceived) and stream_id is not None:
                # A stream we let go of: its bytes still count against the connection.
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            super().handle_event(event)
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.response(event.headers, ended=event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            stream.response_data(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended()
        elif isinstance(event, h2.events.StreamReset):
            self.forget(event.stream_id)
            stream.upstream_reset(event.error_code)
        else:  # e.g. a WINDOW_UPDATE for this stream: queued request DATA may go now
            super().handle_event(event)

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        """No new streams here; those grpcio accepted continue (RFC 9113 6.8)."""
        self.draining = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        for stream in list(self.members):
            if stream.up_id is None or stream.up_id > last:
                stream.upstream_lost()  # never processed by grpcio: UNAVAILABLE, retryable
        if event.error_code != h2.errors.ErrorCodes.NO_ERROR:
            log.info("Observer front: grpcio ended the connection: %s", event.error_code)
            self.close()
        else:
            self.close_if_drained()

    def close_if_drained(self) -> None:
        if self.draining and not self.members:
            self.close()

    def lost(self) -> None:
        self._queued.clear()
        for stream in list(self.members):
            stream.upstream_lost()
        self.members.clear()
        self.by_id.clear()

    def shut(self) -> None:
        """The public connection is gone: close this one too."""
        self._task.cancel()
        self._queued.clear()
        self.members.clear()
        self.by_id.clear()
        self.close()


class ProxyStream:
    """One public HTTP/2 stream relayed to one stream on the upstream connection."""

    def __init__(
        self,
        front: hl.H2Link,
        front_id: int,
        upstream: Upstream,
        headers: hl.Headers,
        on_done: Callable[[ProxyStream], None],
    ) -> None:
        self.front = front
        self.front_id = front_id
        self.upstream = upstream
        self.up_id: int | None = None
        self._responded = False
        self._done = False
        self._on_done = on_done
        upstream.members.add(self)
        request = [(name, value) for name, value in headers if name not in _HOP_BY_HOP]
        upstream.run(lambda: self._open(request))

    def _open(self, headers: hl.Headers) -> None:
        if self._done:
            return
        up = self.upstream
        self.up_id = up.conn.get_next_available_stream_id()
        up.by_id[self.up_id] = self
        up.send_headers(self.up_id, headers)

    # ---- public side -> grpcio -------------------------------------------
    def data(self, data: bytes, flow_controlled_length: int) -> None:
        padding = flow_controlled_length - len(data)
        if padding:
            self._ack_front(padding)
        self.upstream.run(lambda: self._send_up(data))

    def _send_up(self, data: bytes) -> None:
        if self.up_id is not None and not self._done:
            self.upstream.send(self.up_id, data, on_sent=self._ack_front)

    def request_ended(self) -> None:
        self.upstream.run(self._end_up)

    def _end_up(self) -> None:
        if self.up_id is not None and not self._done:
            self.upstream.finish(self.up_id)

    def front_reset(self) -> None:
        """The client reset its stream (or left): cancel the grpcio side."""
        up_id = self.up_id
        self._close()
        if up_id is not None:
            self.upstream.reset(up_id, h2.errors.ErrorCodes.CANCEL)

    def _ack_front(self, count: int) -> None:
        if self.front.closed:
            return
        self.front.conn.acknowledge_received_data(count, self.front_id)
        self.front.write_pending()

    # ---- grpcio -> public side -------------------------------------------
    def response(self, headers: hl.Headers, ended: bool) -> None:
        self._responded = True
        self.front.send_headers(self.front_id, list(headers), end_stream=ended)
        if ended:
            self._close()

    def response_data(self, data: bytes, flow_controlled_length: int) -> None:
        padding = flow_controlled_length - len(data)
        if padding:
            self._ack_up(padding)
        self.front.send(self.front_id, data, on_sent=self._ack_up)

    def _ack_up(self, count: int) -> None:
        if self.up_id is not None and not self.upstream.closed:
            self.upstream.conn.acknowledge_received_data(count, self.up_id)
            self.upstream.write_pending()

    def trailers(self, headers: hl.Headers) -> None:
        self.front.finish(self.front_id, list(headers))
        self._close()

    def ended(self) -> None:
        if not self._done:  # ended without trailers (not gRPC-conformant, but end cleanly)
            self.front.finish(self.front_id)
            self._close()

    def upstream_reset(self, code: int) -> None:
        if not self._done:
            self.front.reset(self.front_id, code)
            self._close()

    def upstream_lost(self) -> None:
        if self._done:
            return
        if self._responded:
            self.front.reset(self.front_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        else:
            headers = [(b":status", b"200"), (b"content-type", hl.GRPC_CONTENT_TYPE)]
            trailers = hl.status_trailers(hl.UNAVAILABLE, "the Observer's gRPC server is gone")
            self.front.send_headers(self.front_id, headers + trailers, end_stream=True)
        self._close()

    def _close(self) -> None:
        if self._done:
            return
        self._done = True
        self.upstream.members.discard(self)
        if self.up_id is not None:
            self.upstream.by_id.pop(self.up_id, None)
        self._on_done(self)
        self.upstream.close_if_drained()
