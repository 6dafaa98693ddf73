"""The node's HTTP/1.1 proxy, for the connections the datapath redirects to it
(septum.dataplane.l7redirect): asyncio protocols on httptools (llhttp, the parser uvicorn
uses), one parse of each side.

Each accepted connection keeps its original destination as its own address; the proxy asks
`policy_for` for the HttpPolicy of (client, original destination) and decides every request
on it: an allowed request goes to the original destination over one upstream connection per
client connection (kept alive while both sides keep it), marked with the client's identity so
the server's L3/L4 policy decides it as the client's; a denied request is answered ``403``
with ``Access denied``, as Cilium's proxy does, and the connection stays usable.  Requests
are handled one at a time in the order they arrived, so pipelined requests get their answers
in order (the ones behind wait, parsed, in a queue).  Every request gives an `HttpRecord` to
`on_record` (the L7 flows), on the response or on the denial.

Request bodies stream, as Envoy's do: a request is decided on its head (the rules look at
nothing else) and, once it is at the head of the queue and allowed, its head and then each
piece of body llhttp hands over go upstream as they come (a chunked body re-framed one chunk
per piece, trailers dropped).  Reading the client pauses while the upstream's write buffer is
over its high-water mark, and while more than _MAX_BUFFERED bytes of body wait in the proxy
(a pipelined request's body waiting for its turn, or while the upstream connects), so memory
per connection is bounded whatever a client uploads.  A denied request is answered ``403`` at
once and its body is read and discarded, so a keep-alive connection stays in step.

Why it is built this way (septum bench l7, docs/benchmarks.md): a request is forwarded as the
bytes the client sent when they are exactly one request and no header action applies, else
rebuilt from its parsed parts; the response is relayed as the bytes the server sent, parsed
only for what the flow needs (status) and where it ends.  Callbacks, not streams: no
coroutine per read.

A connection that opens with the HTTP/2 preface is h2c with prior knowledge (gRPC's and
``curl --http2-prior-knowledge``'s way) and is served by septum.agent.l7.h2c with the same
rules per stream.  Not yet: h2c by ``Upgrade: h2c`` (the upgrade headers are removed, so the
request is answered over HTTP/1.1, as a server that does not upgrade would), ``CONNECT``
tunnels."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, cast

import httptools

from septum.agent.l7.httprules import HeaderAction, HttpPolicy, Mismatch, Request, Verdict
from septum.dataplane import l7redirect

log = logging.getLogger(__name__)

DENIED_BODY = b"Access denied\r\n"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DENIED_HEAD = (
    b"HTTP/1.1 403 Forbidden\r\ncontent-length: %d\r\ncontent-type: text/plain\r\n"
    % len(DENIED_BODY)
)
_DENIED_KEEP = _DENIED_HEAD + b"\r\n" + DENIED_BODY
_DENIED_CLOSE = _DENIED_HEAD + b"connection: close\r\n\r\n" + DENIED_BODY
# What Envoy (Cilium's HTTP proxy) answers when the upstream cannot be reached, or goes away
# before the response's head: the client learns the request was not served, rather than
# seeing its connection cut.
UPSTREAM_FAILED_BODY = b"upstream connect error or disconnect/reset before headers\r\n"
_UPSTREAM_FAILED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(UPSTREAM_FAILED_BODY)
) + UPSTREAM_FAILED_BODY
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_MAX_QUEUED = 32  # pipelined requests parsed ahead; reading pauses beyond
_MAX_BUFFERED = 64 * 1024  # body bytes held per connection; reading pauses beyond
_LAST_CHUNK = b"0\r\n\r\n"
_HOP_UPGRADE = (b"upgrade", b"http2-settings")


@dataclass(frozen=True, slots=True)
class Connection:
    """One redirected client connection: who, and where it was going."""

    source: str
    source_port: int
    destination: str
    destination_port: int


class HttpRecord(NamedTuple):
    """One request as the L7 flows report it (a NamedTuple: one per request, made in a third
    of a frozen dataclass's time)."""

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


def _without_upgrade(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The headers without an upgrade offer (Upgrade, HTTP2-Settings and their Connection
    tokens): the proxy speaks HTTP/1.1 on both sides."""
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in _HOP_UPGRADE:
            continue
        if lower == b"connection":
            tokens = [t.strip() for t in value.split(b",")]
            kept = [t for t in tokens if t.lower() not in _HOP_UPGRADE]
            if not kept:
                continue
            value = b", ".join(kept)
        out.append((name, value))
    return out


class _Pending:
    """A request from its head on: waiting for its turn, then streaming its body upstream."""

    __slots__ = (
        "method",
        "url",
        "version",
        "headers",
        "body",
        "keep_alive",
        "raw",
        "complete",
        "discard",
        "_chunked",
    )

    def __init__(self, method: bytes, url: bytes) -> None:
        self.method = method
        self.url = url
        self.version = "1.1"  # known once the request line has been parsed
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []  # pieces received before it could be forwarded
        self.keep_alive = True
        self.raw: bytes | None = None  # the client's bytes, when they are exactly this request
        self.complete = False  # its whole body has been parsed
        self.discard = False  # denied: the rest of its body is read and dropped
        self._chunked: bool | None = None

    @property
    def chunked(self) -> bool:
        """Whether its body comes in chunks (asked only when it has one: a header scan)."""
        if self._chunked is None:
            self._chunked = any(
                k.lower() == b"transfer-encoding" and b"chunked" in v.lower()
                for k, v in self.headers
            )
        return self._chunked

    def frame(self, piece: bytes) -> bytes:
        """A piece of body as it goes upstream: one chunk of its own when chunked."""
        return b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece

    def serialise(self, headers: list[tuple[bytes, bytes]]) -> bytes:
        """The head with `headers` (the body follows on its own)."""
        lines = [b"%s %s HTTP/%s\r\n" % (self.method, self.url, self.version.encode())]
        lines.extend(b"%s: %s\r\n" % pair for pair in headers)
        lines.append(b"\r\n")
        return b"".join(lines)


class _Client(asyncio.Protocol):
    """One redirected client connection: parses its requests, decides them in order, relays
    the allowed ones over its upstream (bodies as they come) and the responses back."""

    def __init__(self, proxy: HttpProxy) -> None:
        self._proxy = proxy
        self._transport: asyncio.Transport | None = None
        self._conn: Connection | None = None
        self._opening = b""
        self._parser: httptools.HttpRequestParser | None = None
        self._current: _Pending | None = None  # being parsed
        self._completed = 0  # requests completed by the feed in progress
        self._in_message = False
        self._queue: collections.deque[_Pending] = collections.deque()
        self._busy: _Pending | None = None  # forwarded, its response not yet done
        self._sending: _Pending | None = None  # forwarded, its body still coming
        self._verdict: Verdict | None = None
        self._record: tuple[str, str, tuple[tuple[str, str], ...]] = ("", "", ())
        self._started = 0
        self._upstream: _Upstream | None = None
        self._connecting = False
        self._early: list[bytes] = []  # for the upstream while it connects
        self._head_method = False  # the request the upstream answers is a HEAD
        self._buffered = 0  # body bytes held here (queued requests, _early)
        self._upstream_full = False  # the upstream's write buffer is over its high-water mark
        self._eof = False
        self._closing = False
        self._reading_paused = False

    # -- client side ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        source = transport.get_extra_info("peername")
        destination = transport.get_extra_info("sockname")
        self._conn = Connection(source[0], source[1], destination[0], destination[1])

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self._parser is None:
            self._opening += data
            if len(self._opening) < len(H2_PREFACE) and H2_PREFACE.startswith(self._opening):
                return  # not yet enough to tell HTTP/2's preface from a request
            data, self._opening = self._opening, b""
            if data.startswith(H2_PREFACE):
                self._to_h2c(data)
                return
            self._parser = httptools.HttpRequestParser(self)
        self._feed(data)
        self._advance()

    def _feed(self, data: bytes) -> None:
        whole = data
        fresh = not self._in_message  # this data starts a request, none is half-parsed
        self._completed = 0
        while data:
            try:
                assert self._parser is not None
                self._parser.feed_data(data)
                data = b""
            except httptools.HttpParserUpgrade as upgrade:
                # An upgrade offer (or CONNECT): the request is complete; go on parsing
                # what follows with a new parser (llhttp stops at the upgrade).
                fresh = False
                data = data[upgrade.args[0] :]
                self._parser = httptools.HttpRequestParser(self)
            except httptools.HttpParserError as err:
                log.debug("HTTP connection %s: bad request: %s", self._conn, err)
                self._bad_request()
                return
        if fresh and self._completed == 1 and not self._in_message:
            last = self._queue[-1] if self._queue else None
            if last is not None and not last.discard and last.raw is None:
                last.raw = whole  # exactly one request, not yet forwarded: it goes as it came

    def _bad_request(self) -> None:
        if self._busy is None and self._sending is None and not self._queue and self._transport:
            self._transport.write(_BAD_REQUEST)
        self._close()

    def eof_received(self) -> bool:
        self._eof = True
        cut = self._current if self._in_message else None  # a request that cannot complete
        if cut is not None and cut is self._sending:
            self._close()  # the server waits for a body that will not come
            return False
        if cut is not None and self._queue and self._queue[-1] is cut:
            self._queue.pop()  # never forwarded: the requests before it are answered
            self._drop_body(cut)
        if self._busy is None and not self._queue:
            self._close()  # nothing asked, or a request cut short: no answer can follow
            return False
        return True  # answer what was asked first, then close

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def pause_writing(self) -> None:  # the client reads slower than the server answers
        if self._upstream is not None:
            self._upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._upstream is not None:
            self._upstream.resume_reading()

    def upstream_writable(self, writable: bool) -> None:
        """The upstream's write buffer went over (False) or back under its high-water mark."""
        self._upstream_full = not writable
        self._pace()

    def _pace(self) -> None:
        """Pause reading the client while what it sends cannot go on, resume when it can."""
        transport = self._transport
        if transport is None or self._closing:
            return
        if self._reading_paused:
            if (
                not self._upstream_full
                and self._buffered <= _MAX_BUFFERED
                and len(self._queue) <= _MAX_QUEUED // 2
            ):
                self._reading_paused = False
                transport.resume_reading()
        elif (
            self._upstream_full or self._buffered > _MAX_BUFFERED or len(self._queue) > _MAX_QUEUED
        ):
            self._reading_paused = True
            transport.pause_reading()

    # -- httptools request callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True

    def on_url(self, url: bytes) -> None:
        if self._current is None:
            assert self._parser is not None
            self._current = _Pending(self._parser.get_method(), url)
        else:
            self._current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._current is not None
        self._current.headers.append((name, value))

    def on_headers_complete(self) -> None:
        current = self._current
        assert current is not None and self._parser is not None
        current.keep_alive = self._parser.should_keep_alive()
        current.version = self._parser.get_http_version()
        if self._parser.should_upgrade():
            current.headers = _without_upgrade(current.headers)
        self._queue.append(current)  # decided when it is at the head (after this feed)

    def on_body(self, body: bytes) -> None:
        current = self._current
        assert current is not None
        if current.discard:
            return
        if current is self._sending:
            self._to_upstream(current.frame(body))
            return
        current.body.append(body)
        self._buffered += len(body)
        self._proxy.note_buffered(self._buffered)

    def on_message_complete(self) -> None:
        current = self._current
        assert current is not None and self._parser is not None
        if self._parser.should_upgrade():
            current.raw = None  # the upgrade offer is not forwarded
        current.complete = True
        self._current = None
        self._in_message = False
        self._completed += 1
        if current is self._sending:
            self._sending = None
            if current.chunked:
                self._to_upstream(_LAST_CHUNK)
        self._pace()

    # -- deciding and forwarding -------------------------------------------------------------

    def _advance(self) -> None:
        """Answer or forward the queued requests in order, one at a time."""
        transport = self._transport
        assert transport is not None and self._conn is not None
        while self._queue and self._busy is None and self._sending is None and not self._closing:
            request = self._queue.popleft()
            self._started = time.monotonic_ns()
            headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers)
            host = ""
            for name, value in headers:
                if len(name) == 4 and name.lower() == "host":
                    host = value
                    break
            target = request.url.decode("latin-1")
            path = target.split("?", 1)[0] if target.startswith("/") else target
            method = request.method.decode("latin-1")
            verdict = self._proxy.decide_parts(self._conn, method, path, host, headers)
            url = f"http://{host or self._conn.destination}{target}"
            if verdict is None or not verdict.allowed:
                # Answered on its head, as Envoy does; the body is read and dropped so the
                # next request on a keep-alive connection parses from the right byte.
                self._drop_body(request)
                request.discard = not request.complete
                transport.write(_DENIED_KEEP if request.keep_alive else _DENIED_CLOSE)
                self._proxy.record(self._conn, method, url, "HTTP/1.1", headers, False, 403, 0, -1)
                if not request.keep_alive:
                    self._close()
                    return
                continue
            self._busy = request
            self._verdict = verdict
            self._record = (method, url, headers)
            self._head_method = request.method == b"HEAD"
            if request.raw is not None and not verdict.actions:
                self._drop_body(request)  # the raw bytes hold it
                self._start_upstream(request.raw)
            else:
                wanted = _apply(request.headers, verdict.actions) if verdict.actions else None
                self._start_upstream(request.serialise(wanted or request.headers))
                for piece in request.body:
                    self._to_upstream(request.frame(piece))
                self._drop_body(request)
                if not request.complete:
                    self._sending = request  # the rest of its body streams as it comes
                elif request.chunked:
                    self._to_upstream(_LAST_CHUNK)
        self._pace()
        if self._eof and self._busy is None and not self._queue:
            self._close()

    def _drop_body(self, request: _Pending) -> None:
        """Forget the body pieces held for `request` (forwarded, or not to be)."""
        for piece in request.body:
            self._buffered -= len(piece)
        request.body = []

    def _start_upstream(self, head: bytes) -> None:
        """Send a request's head upstream, connecting first if there is no upstream yet."""
        if self._upstream is not None:
            self._upstream.expect(self._head_method)
            self._upstream.write(head)
            return
        self._early.append(head)
        if not self._connecting:
            self._connecting = True
            asyncio.get_running_loop().create_task(self._connect())

    def _to_upstream(self, data: bytes) -> None:
        if self._upstream is not None:
            self._upstream.write(data)
        else:
            self._early.append(data)
            self._buffered += len(data)
            self._proxy.note_buffered(self._buffered)

    async def _connect(self) -> None:
        assert self._conn is not None
        try:
            _, upstream = await self._proxy.connect_upstream_protocol(
                self._conn, lambda: _Upstream(self)
            )
        except OSError as err:
            log.debug("HTTP connection %s: upstream failed: %s", self._conn, err)
            self._connecting = False
            self.upstream_ended(0)
            return
        finally:
            self._connecting = False
        if self._closing:
            upstream.close()
            return
        self._upstream = upstream
        early, self._early = self._early, []
        self._buffered -= sum(len(piece) for piece in early[1:])  # the head is not body
        upstream.expect(self._head_method)
        upstream.write(b"".join(early))
        self._pace()

    def response_done(self, status: int, keep_alive: bool) -> None:
        """The upstream's response to the forwarded request has been relayed whole."""
        request, self._busy = self._busy, None
        assert request is not None and self._conn is not None and self._verdict is not None
        self._record_forwarded(status)
        if not keep_alive or not request.keep_alive:
            self._close()  # the response said so to the client too (or it asked)
            return
        self._advance()  # (a body still coming goes on streaming to the server first)

    def relay(self, data: bytes) -> None:
        if self._transport is not None and not self._closing:
            self._transport.write(data)

    def _record_forwarded(self, status: int) -> None:
        """The flow record of the forwarded request, answered with `status`."""
        assert self._conn is not None and self._verdict is not None
        method, url, headers = self._record
        self._proxy.record(
            self._conn,
            method,
            url,
            "HTTP/1.1",
            headers,
            True,
            status,
            time.monotonic_ns() - self._started,
            self._verdict.rule_index,
        )

    def upstream_ended(self, status: int) -> None:
        """The upstream went away while the forwarded request's response was due.  `status`
        is the response's, when its head had been relayed: a response that ends at the close
        (no length: llhttp cannot see its end without an EOF it has no call for) or one cut
        short; it is recorded with that status.  With nothing relayed yet (0), the client gets
        Envoy's 503, recorded as such.  Either way the connection closes after it."""
        request, self._busy = self._busy, None
        if request is None or self._closing or self._conn is None or self._verdict is None:
            self._close()
            return
        if status == 0:
            status = 503
            if self._transport is not None:
                self._transport.write(_UPSTREAM_FAILED)
        self._record_forwarded(status)
        self._close()

    def upstream_lost(self, upstream: _Upstream) -> None:
        if self._upstream is upstream:
            self._upstream = None
            self._upstream_full = False
            if self._busy is not None or self._sending is not None:
                self._close()  # mid-exchange: the client cannot be answered now

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None
        if self._transport is not None:
            self._transport.close()  # after what is buffered has been written

    # -- h2c ---------------------------------------------------------------------------------

    def _to_h2c(self, first: bytes) -> None:
        """Hand the connection to septum.agent.l7.h2c (streams: h2's pace is not per byte)."""
        transport = self._transport
        assert transport is not None and self._conn is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        loop.create_task(self._proxy.serve_h2c(self._conn, reader, writer, first))


class _Upstream(asyncio.Protocol):
    """The connection to the original destination: relays each response as it comes and
    parses it for its status and its end."""

    def __init__(self, client: _Client) -> None:
        self._client = client
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._head = False
        self._status = 0
        self._informational = False
        self._done: tuple[int, bool] | None = None
        self._waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def expect(self, head: bool) -> None:
        """A request is going out: its response is the next one (`head`: to a HEAD)."""
        self._head = head
        self._waiting = True
        self._status = 0
        self._informational = False

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        if not self._waiting:  # nothing was asked: not HTTP as the proxy speaks it
            self.close()
            return
        self._client.relay(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as err:
            log.debug("HTTP upstream: bad response: %s", err)
            self.close()
            return
        done, self._done = self._done, None
        if done is not None:
            if self._head:  # no body follows; llhttp would wait for one
                self._parser = httptools.HttpResponseParser(self)
            self._waiting = False
            self._client.response_done(*done)

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._informational = 100 <= self._status < 200 and self._status != 101
        if self._head and not self._informational:
            self._done = (self._status, self._parser.should_keep_alive())

    def on_message_complete(self) -> None:
        if not self._informational and not self._head:
            self._done = (self._status, self._parser.should_keep_alive())

    def pause_writing(self) -> None:  # the server reads slower than the client sends
        self._client.upstream_writable(False)

    def resume_writing(self) -> None:
        self._client.upstream_writable(True)

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiting:  # a response was due: ended by the close, cut, or never begun
            self._waiting = False
            self._client.upstream_ended(0 if self._informational else self._status)
        self._client.upstream_lost(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _VerdictCache:
    """Verdicts by (method, path, host) for policies whose rules look at nothing else: RE2
    through its Python binding costs ~4-8 us a call, more than the rest of a request's
    decision (septum bench l7).  A policy is known by identity (the service caches them per
    connection kind and drops them when policies change); every table is bounded and emptied
    when full, so a client varying paths costs memory no more than that."""

    _POLICIES = 256
    _ENTRIES = 4096

    def __init__(self) -> None:
        self._tables: dict[int, tuple[HttpPolicy, dict[tuple[str, str, str], Verdict] | None]] = {}

    def decide(
        self,
        policy: HttpPolicy,
        method: str,
        path: str,
        host: str,
        headers: tuple[tuple[str, str], ...],
    ) -> Verdict:
        entry = self._tables.get(id(policy))
        if entry is None or entry[0] is not policy:
            headerless = not any(rule.headers or rule.header_matches for rule in policy.rules)
            if len(self._tables) >= self._POLICIES:
                self._tables.clear()
            entry = self._tables[id(policy)] = (policy, {} if headerless else None)
        table = entry[1]
        if table is None:
            return policy.decide(Request(method, path, host, headers))
        key = (method, path, host)
        verdict = table.get(key)
        if verdict is None:
            if len(table) >= self._ENTRIES:
                table.clear()
            verdict = table[key] = policy.decide(Request(method, path, host, headers))
        return verdict


def _syn_retries(connect_timeout_s: float) -> int:
    """TCP_SYNCNT for a connect timeout: SYN retries n give up after 2**(n+1) - 1 s."""
    if not connect_timeout_s > 0:
        raise ValueError(f"connect_timeout_s: {connect_timeout_s!r} is not a positive time")
    return next((n for n in range(1, 128) if 2 ** (n + 1) - 1 >= connect_timeout_s), 127)


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
        self._syn_retries = _syn_retries(connect_timeout_s)
        self._servers: list[asyncio.Server] = []
        self.peak_buffered_body = 0  # the most body bytes one connection has held (tests, bench)
        self._verdicts = _VerdictCache()

    async def serve(self, listener: socket.socket) -> asyncio.Server:
        """Serve a listener of l7redirect.open_listener until the returned server is closed."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Client(self), sock=listener)
        self._servers.append(server)
        return server

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()

    def decide(self, conn: Connection, request: Request) -> Verdict | None:
        """The verdict of the connection's policy (None: no policy, so nothing is allowed)."""
        return self.decide_parts(conn, request.method, request.path, request.host, request.headers)

    def decide_parts(
        self,
        conn: Connection,
        method: str,
        path: str,
        host: str,
        headers: tuple[tuple[str, str], ...],
    ) -> Verdict | None:
        """The same from a request's parts (a Request is made only when the rules run)."""
        policy = self._policy_for(conn)
        return self._verdicts.decide(policy, method, path, host, headers) if policy else None

    async def serve_h2c(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes,
    ) -> None:
        from septum.agent.l7.h2c import serve_h2c

        try:
            await serve_h2c(self, conn, reader, writer, first)
        except (ConnectionError, asyncio.IncompleteReadError) as err:
            log.debug("h2c connection %s ended: %s", conn, err)
        except Exception:  # an h2 protocol error: the connection ends, the proxy goes on
            log.debug("h2c connection %s failed", conn, exc_info=True)
        finally:
            writer.close()

    def _connecting_socket(self, conn: Connection) -> socket.socket:
        """A socket to the original destination with its connect(2) started, not awaited: the
        transport it is handed to writes once the handshake is done, and a refused or
        unanswered connect reaches its protocol as connection_lost.  Not loop.sock_connect:
        uvloop's (0.23) passes no socket type to getaddrinfo, so even an IP literal went
        through libuv's thread pool (a worker woken, futexes; ~5 % of the proxy's samples in
        perf, and as much again in scheduling), and wait_for added a Task: without them the
        proxy serves 5-38 % more new connections per CPU-second (paired runs, septum bench
        l7, docs/benchmarks.md).  The connect timeout is the kernel's SYN retries: the fewest
        whose total (3, 7, 15 ... s) reaches connect_timeout_s."""
        sock = l7redirect.open_upstream(
            conn.destination, self._identity_for(conn), ingress=self._ingress, ns=self._ns
        )
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, self._syn_retries)
            sock.setblocking(False)
            sock.connect((conn.destination, conn.destination_port))
        except (BlockingIOError, InterruptedError):
            pass  # EINPROGRESS
        except OSError:
            sock.close()
            raise
        return sock

    async def connect_upstream_protocol(
        self, conn: Connection, factory: Callable[[], _Upstream]
    ) -> tuple[asyncio.BaseTransport, _Upstream]:
        """A connection to the original destination, marked with the client's identity,
        driven by the protocol `factory` makes."""
        sock = self._connecting_socket(conn)
        loop = asyncio.get_running_loop()
        return await loop.create_connection(factory, sock=sock)

    async def connect_upstream(
        self, conn: Connection
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The same as streams (h2c)."""
        return await asyncio.open_connection(sock=self._connecting_socket(conn))

    def note_buffered(self, held: int) -> None:
        if held > self.peak_buffered_body:
            self.peak_buffered_body = held

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
            try:
                self._on_record(
                    HttpRecord(
                        conn, method, url, protocol, headers, allowed, code, latency_ns, rule_index
                    )
                )
            except Exception:  # a flow or metric that fails must never stall the connection
                log.exception("HTTP proxy: recording %s %s failed", method, url)
