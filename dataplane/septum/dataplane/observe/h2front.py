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
import errno
import logging
import socket
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
# Connections accepted per wake-up of a listener, and its backlog (asyncio's defaults).
_ACCEPT_BATCH = 100
# Out of file descriptors or memory: stop accepting for this long, as asyncio's servers do.
_ACCEPT_PAUSE_S = 1.0
_ACCEPT_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True)
class Listener:
    """One public socket: a unix path, or a TCP host/port with optional TLS."""

    unix_path: Path | None = None
    host: str | None = None
    port: int = 0
    ssl_context: ssl.SSLContext | None = None
    setting: str = "listen"  # named in a bind error, e.g. "listen.tcp_address"


class FrontConnection(hl.H2Link):
    """One public HTTP/2 connection (server side).

    It exists from the moment its socket is accepted: until the transport is
    made (a TLS handshake, or one loop turn for plaintext) `opening` is the
    task making it, which stop() cancels.
    """

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
        self.opening: asyncio.Task[Any] | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.front.closing:
            self.goodbye()  # made after stop() said goodbye to everyone else
        elif self.front.stopping:
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
        """Server stop: GOAWAY, then close once what is queued has been written.

        Not made yet (in its TLS handshake): stop making it.
        """
        if self.transport is None:
            if self.opening is not None:
                self.opening.cancel()
            return
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
        self._sockets: list[socket.socket] = []  # listening, ours to accept on and close
        self._thread: threading.Thread | None = None
        self._listener_token: int | None = None
        self.stopping = False  # GOAWAY sent: no new streams
        self.closing = False  # goodbye said: connections made from now on close at once

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
        for listener in self.listeners:
            try:
                sockets = await self._bind(listener)
            except OSError as err:
                where = listener.unix_path or f"{listener.host}:{listener.port}"
                raise ListenError(
                    err.errno, f"{listener.setting}: cannot listen on {where}: {err}"
                ) from err
            if listener.unix_path is None:
                self.bound_ports.append(int(sockets[0].getsockname()[1]))
            for sock in sockets:
                self._sockets.append(sock)
                self.loop.add_reader(sock, self._accept, sock, listener.ssl_context)

    async def _bind(self, listener: Listener) -> list[socket.socket]:
        """Listening sockets for one listener (every address of a TCP host, as asyncio binds).

        We accept on them ourselves instead of through loop.create_server: its
        accepted sockets wait a loop turn (a whole TLS handshake) in a task we
        cannot reach, so a stop could not close them.
        """
        addresses: list[tuple[socket.AddressFamily, int, Any]]
        if listener.unix_path is not None:
            addresses = [(socket.AF_UNIX, 0, str(listener.unix_path))]
        else:
            infos = await self.loop.getaddrinfo(
                listener.host or None,
                listener.port,
                type=socket.SOCK_STREAM,
                flags=socket.AI_PASSIVE,
            )
            addresses = list(dict.fromkeys((fam, proto, addr) for fam, _, proto, _, addr in infos))
        sockets: list[socket.socket] = []
        try:
            for family, proto, address in addresses:
                sock = socket.socket(family, socket.SOCK_STREAM, proto)
                sockets.append(sock)
                if family != socket.AF_UNIX:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(_ACCEPT_BATCH)
                sock.setblocking(False)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return sockets

    def _accept(self, listening: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        """The listener is readable: take every waiting connection into our books."""
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno not in _ACCEPT_RESOURCE_ERRORS:
                    continue  # e.g. ECONNABORTED: that client is gone, the next may wait
                log.warning(
                    "Observer front: cannot accept connections (%s); pausing %.1f s",
                    err,
                    _ACCEPT_PAUSE_S,
                )
                self.loop.remove_reader(listening)
                self.loop.call_later(
                    _ACCEPT_PAUSE_S, self._resume_accepting, listening, ssl_context
                )
                return
            self._open(sock, ssl_context)

    def _resume_accepting(
        self, listening: socket.socket, ssl_context: ssl.SSLContext | None
    ) -> None:
        if listening in self._sockets:  # not closed by stop() meanwhile
            self.loop.add_reader(listening, self._accept, listening, ssl_context)

    def _open(self, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> None:
        """Make an accepted socket a connection; it is in self.connections from now on."""
        if self.stopping:
            sock.close()  # accepted in the loop turn that began the stop
            return
        sock.setblocking(False)
        connection = FrontConnection(self)
        self.connections.add(connection)
        started: list[bool] = []  # whether the task ran: then asyncio owns the socket

        async def make() -> None:
            started.append(True)
            await self.loop.connect_accepted_socket(lambda: connection, sock, ssl=ssl_context)

        def made(task: asyncio.Task[None]) -> None:
            connection.opening = None
            failed = task.cancelled() or task.exception() is not None
            if not failed or connection.transport is not None:
                return  # made: connection_lost() will forget it
            if task.cancelled():
                log.debug("Observer front: connection closed before it was made (stop)")
            else:  # asyncio closed its transport, e.g. a failed TLS handshake
                log.debug("Observer front: connection not made: %r", task.exception())
            if not started:
                sock.close()  # cancelled before connect_accepted_socket took it
            self.connections.discard(connection)
            connection.gone.set()

        connection.opening = self.loop.create_task(make())
        connection.opening.add_done_callback(made)

    def _close_listeners(self) -> None:
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self.loop.remove_reader(sock)
            sock.close()

    async def _shutdown(self, grace_s: float) -> None:
        # Accepted from here on: closed at once (see _open). Every connection
        # accepted before is in self.connections, made or still being made.
        self.stopping = True
        self._close_listeners()
        for connection in list(self.connections):
            connection.drain()  # one still being made drains in connection_made
        # The ring is closed: followers end on their own; give them the grace period.
        self._ring_advanced()
        deadline = self.loop.time() + grace_s
        while any(c.flows or c.proxied for c in self.connections):
            if self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        self.closing = True
        connections = list(self.connections)
        for connection in connections:
            connection.goodbye()
        await self._wait_gone(connections)
        for connection in connections:
            if not connection.gone.is_set() and connection.transport is not None:
                connection.transport.abort()
        # An aborted transport calls connection_lost() in a later loop turn, and
        # a cancelled opening finishes in one: wait for both before the loop stops.
        if not await self._wait_gone(connections):
            left = [c for c in connections if not c.gone.is_set()]
            log.warning("Observer front: %d connections did not close on stop", len(left))

    async def _wait_gone(self, connections: list[FrontConnection]) -> bool:
        """Until every connection is gone or _CLOSE_WAIT_S passed; True if all are."""
        waits = [asyncio.ensure_future(c.gone.wait()) for c in connections if not c.gone.is_set()]
        if not waits:
            return True
        _, pending = await asyncio.wait(waits, timeout=_CLOSE_WAIT_S)
        for wait in pending:
            wait.cancel()
        return not pending

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
