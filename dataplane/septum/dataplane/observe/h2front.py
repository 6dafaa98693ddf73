"""The Observer's public HTTP/2 listeners: GetFlows natively, everything else relayed.

One event-loop thread owns the unix socket and the TCP listener (TLS with
ALPN "h2", mutual TLS, or explicitly chosen plaintext). On each connection a
stream for /observer.Observer/GetFlows is served by h2flows (many messages per
DATA frame); every other stream is relayed to the grpcio server listening on
a private unix socket (h2proxy). Followers that have read everything sleep
until the ring's writer calls back, which wakes the loop once per write batch.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h2.errors
import h2.events
import h2.exceptions

from septum.dataplane.observe import h2link as hl
from septum.dataplane.observe.errors import ListenError as ListenError
from septum.dataplane.observe.h2flows import GET_FLOWS_PATH, FlowsStream
from septum.dataplane.observe.h2proxy import ProxyStream, Upstream
from septum.dataplane.observe.ring import FlowRing

log = logging.getLogger(__name__)

# After stop(), how long a closing connection may take to flush before it is cut.
_CLOSE_WAIT_S = 1.0


@dataclass(frozen=True)
class Listener:
    """One public socket: a unix path, or a TCP host/port with optional TLS."""

    unix_path: Path | None = None
    host: str | None = None
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    setting: str = "listen"  # named in a bind error, e.g. "listen.tcp_address"


class FrontConnection(hl.H2Link):
    """One public HTTP/2 connection (server side)."""

    def __init__(self, front: H2Front) -> None:
        self.front = front
        super().__init__(client_side=False)
        self.ring = front.ring
        self.node_name = front.node_name
        self.loop = front.loop
        self.flows: dict[int, FlowsStream] = {}
        self.proxied: dict[int, ProxyStream] = {}
        self._upstream: Upstream | None = None  # where new relayed streams go
        self._draining: list[Upstream] = []  # earlier ones grpcio said GOAWAY on
        self.gone = asyncio.Event()
        self.draining = False  # we sent GOAWAY: new streams are refused

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.front.connections.add(self)
        if self.front.stopping:
            self.drain()

    # ---- FlowsHost -------------------------------------------------------
    def wait_for_ring(self, stream: FlowsStream, seq: int) -> None:
        self.front.wait_for_ring(stream, seq)

    def flows_stream_done(self, stream: FlowsStream) -> None:
        self.flows.pop(stream.stream_id, None)
        self.front.flows_stream_done(stream)

    # ---- events ----------------------------------------------------------
    def handle_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            if sid in self.proxied:
                self.proxied[sid].data(event.data, event.flow_controlled_length)
                return
            self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            if sid in self.flows:
                self.flows[sid].data(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            sid = event.stream_id
            if sid in self.flows:
                self.flows[sid].request_ended()
            elif sid in self.proxied:
                self.proxied[sid].request_ended()
        elif isinstance(event, h2.events.StreamReset):
            sid = event.stream_id
            self.forget(sid)
            if sid in self.flows:
                self.flows[sid].close()
            elif sid in self.proxied:
                self.proxied[sid].front_reset()
        else:
            super().handle_event(event)

    def _request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self.draining:
            # Opened before our GOAWAY reached the client: it was not processed,
            # so the client may retry it elsewhere (RFC 9113 8.7).
            self.reset(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        headers = list(event.headers)
        path = next((value for name, value in headers if name == b":path"), b"")
        if path == GET_FLOWS_PATH:
            if self.front.active_flows >= self.front.max_streams:
                refused = [(b":status", b"200"), (b"content-type", hl.GRPC_CONTENT_TYPE)]
                refused += hl.status_trailers(
                    hl.RESOURCE_EXHAUSTED,
                    f"listen.max_streams: {self.front.max_streams} GetFlows streams are open",
                )
                self.send_headers(sid, refused, end_stream=True)
                return
            stream = FlowsStream(self, self, sid, headers)
            self.flows[sid] = stream
            self.front.flows_stream_started(stream)
            if event.stream_ended is not None:
                stream.request_ended()
            return
        upstream = self._upstream
        if upstream is None or upstream.closed or upstream.draining:
            if upstream is not None and not upstream.closed:
                self._draining.append(upstream)  # its streams run to their end
            self._draining = [up for up in self._draining if not up.closed]
            upstream = self._upstream = Upstream(self.loop, self.front.upstream_path)
        proxy = ProxyStream(self, sid, upstream, headers, self._proxy_done)
        self.proxied[sid] = proxy
        if event.stream_ended is not None:
            proxy.request_ended()

    def _proxy_done(self, stream: ProxyStream) -> None:
        self.proxied.pop(stream.front_id, None)

    def writable(self) -> None:
        for stream in list(self.flows.values()):
            stream.pump()

    def lost(self) -> None:
        for stream in list(self.flows.values()):
            stream.close()
        for proxy in list(self.proxied.values()):
            proxy.front_reset()
        for upstream in [self._upstream, *self._draining]:
            if upstream is not None:
                upstream.shut()
        self._upstream = None
        self._draining.clear()
        self.front.connections.discard(self)
        self.gone.set()

    def drain(self) -> None:
        """Server stop begins: GOAWAY, so the client opens no new streams here;
        the open ones run on (h2link keeps the connection open after it)."""
        if self.closed or self.draining:
            return
        self.draining = True
        try:
            self.conn.close_connection()  # last stream id: the highest we have seen
        except h2.exceptions.ProtocolError:
            pass
        self.write_pending()

    def goodbye(self) -> None:
        """Server stop: GOAWAY, then close once what is queued has been written."""
        if self.closed:
            return
        try:
            self.conn.close_connection()
        except h2.exceptions.ProtocolError:
            pass
        self.write_pending()
        self.close()


class H2Front:
    """The public listeners on their own event-loop thread."""

    def __init__(
        self,
        ring: FlowRing,
        node_name: Callable[[], str],
        upstream_path: str,
        listeners: list[Listener],
        max_streams: int,
    ) -> None:
        self.ring = ring
        self._node_name = node_name
        self.upstream_path = upstream_path
        self.listeners = listeners
        self.max_streams = max_streams
        self.loop = asyncio.new_event_loop()
        self.connections: set[FrontConnection] = set()
        self.bound_ports: list[int] = []  # TCP ports, in listener order
        self._flows: set[FlowsStream] = set()
        self._waiting: set[FlowsStream] = set()
        self._wake_scheduled = False
        self._servers: list[asyncio.Server] = []
        self._thread: threading.Thread | None = None
        self._listener_token: int | None = None
        self.stopping = False

    @property
    def node_name(self) -> str:
        return self._node_name()

    @property
    def active_flows(self) -> int:
        """GetFlows streams open now (safe to read from any thread)."""
        return len(self._flows)

    # ---- lifecycle (caller's thread) ------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="observer-h2", daemon=True)
        self._thread.start()
        try:
            self._call(self._listen()).result()
        except BaseException:
            self.stop(0)
            raise
        self._listener_token = self.ring.add_listener(self._ring_written)

    def stop(self, grace_s: float) -> None:
        if self._listener_token is not None:
            self.ring.remove_listener(self._listener_token)
            self._listener_token = None
        thread = self._thread
        if thread is None:
            return
        if thread.is_alive():
            self._call(self._shutdown(grace_s)).result()
            self.loop.call_soon_threadsafe(self.loop.stop)
            thread.join()
        self._thread = None
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _call(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _listen(self) -> None:
        loop = self.loop
        for listener in self.listeners:
            try:
                if listener.unix_path is not None:
                    server = await loop.create_unix_server(
                        lambda: FrontConnection(self), str(listener.unix_path)
                    )
                else:
                    server = await loop.create_server(
                        lambda: FrontConnection(self),
                        listener.host or None,
                        listener.port,
                        ssl=listener.ssl_context,
                    )
                    self.bound_ports.append(int(server.sockets[0].getsockname()[1]))
            except OSError as err:
                where = listener.unix_path or f"{listener.host}:{listener.port}"
                raise ListenError(
                    err.errno, f"{listener.setting}: cannot listen on {where}: {err}"
                ) from err
            self._servers.append(server)

    async def _shutdown(self, grace_s: float) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()  # no new connections; open ones are ours to end below
        self.stopping = True
        for connection in list(self.connections):
            connection.drain()
        # The ring is closed: followers end on their own; give them the grace period.
        self._ring_advanced()
        deadline = self.loop.time() + grace_s
        while any(c.flows or c.proxied for c in self.connections):
            if self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        connections = list(self.connections)
        for connection in connections:
            connection.goodbye()
        waits = [asyncio.ensure_future(c.gone.wait()) for c in connections]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=_CLOSE_WAIT_S)
            for wait in pending:
                wait.cancel()
        for connection in connections:
            if not connection.gone.is_set() and connection.transport is not None:
                connection.transport.abort()
        # Only now: since Python 3.12.1 wait_closed() waits for every connection
        # to close, so before the goodbyes it would wait for the clients.
        for server in servers:
            try:
                await asyncio.wait_for(server.wait_closed(), _CLOSE_WAIT_S)
            except TimeoutError:
                log.warning("Observer front: a listener did not close within %.1f s", _CLOSE_WAIT_S)
        await asyncio.sleep(0)  # let aborted transports run connection_lost

    # ---- followers (loop thread, except _ring_written) ------------------
    def flows_stream_started(self, stream: FlowsStream) -> None:
        self._flows.add(stream)

    def flows_stream_done(self, stream: FlowsStream) -> None:
        self._flows.discard(stream)
        self._waiting.discard(stream)

    def wait_for_ring(self, stream: FlowsStream, seq: int) -> None:
        stream.waiting_for = seq
        self._waiting.add(stream)
        # The writer may have written between the reader's check and now.
        if self.ring.head > seq or self.ring.closed:
            self._waiting.discard(stream)
            stream.schedule()

    def _ring_written(self) -> None:
        """The ring's writer thread, after each batch: wake the loop if anyone waits."""
        if self._waiting and not self._wake_scheduled:
            self._wake_scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._ring_advanced)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def _ring_advanced(self) -> None:
        self._wake_scheduled = False  # before reading head: a later write wakes us again
        head, closed = self.ring.head, self.ring.closed
        for stream in list(self._waiting):
            if closed or (stream.waiting_for is not None and stream.waiting_for < head):
                self._waiting.discard(stream)
                stream.pump()
