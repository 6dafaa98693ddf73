"""``exec`` over SPDY/3.1, the kubelet's older streaming protocol, server side.

Clients that build ``remotecommand.NewSPDYExecutor`` themselves — the network-policy-api
conformance suite and cyclonus probe every connection that way — send a SPDY upgrade, and the
API server proxies SPDY unchanged to the kubelet (it translates only WebSocket requests). So
the lab kubelet answers SPDY as a real kubelet does (client-go's ``httpstream/spdy`` and
``moby/spdystream`` on the other end): the client opens one stream per channel (``streamType``
error, stdin, stdout, stderr, resize), each answered with a SYN_REPLY; once as many streams
are open as the request implies, the command runs, its output goes out as DATA frames, and the exit
status is written to the error stream as a ``metav1.Status`` (protocol v4) before every stream
is closed.

Frames and header blocks follow the SPDY/3 draft (section 2); the header-block compression
dictionary is the draft's (section 2.6.10.1), built below from its words.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

log = logging.getLogger("septum.lab.kubelet")

PROTOCOL_V4 = "v4.channel.k8s.io"
STREAM_CREATION_TIMEOUT_S = 30.0  # the kubelet's streamCreationTimeout

SPDY_VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = (
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
)
FLAG_FIN = 0x01
MAX_DATA_FRAME = 32768

# The draft's dictionary: length-prefixed header words, then a tail of common values.
_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base "
    "content-encoding content-language content-length content-location content-md5 "
    "content-range content-type date etag expect expires from host if-match if-modified-since "
    "if-none-match if-range if-unmodified-since last-modified location max-forwards pragma "
    "proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 "
    "Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 "
    "Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, "
    "Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,"
    "application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch"
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
HEADER_DICTIONARY = (
    b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS)
    + _DICTIONARY_TAIL.encode()
)


def is_spdy_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower().startswith("spdy/")


def control_frame(frame_type: int, flags: int, payload: bytes) -> bytes:
    return (
        struct.pack(">HHI", 0x8000 | SPDY_VERSION, frame_type, flags << 24 | len(payload)) + payload
    )


def data_frame(stream_id: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, flags << 24 | len(payload)) + payload


def encode_headers(headers: dict[str, str]) -> bytes:
    """An uncompressed header block: a count, then (name, value) each length-prefixed."""
    block = struct.pack(">I", len(headers))
    for name, value in headers.items():
        block += struct.pack(">I", len(name)) + name.lower().encode()
        block += struct.pack(">I", len(value.encode())) + value.encode()
    return block


def decode_headers(block: bytes) -> dict[str, str]:
    (count,) = struct.unpack_from(">I", block, 0)
    offset, headers = 4, {}
    for _ in range(count):
        (n,) = struct.unpack_from(">I", block, offset)
        name = block[offset + 4 : offset + 4 + n].decode()
        offset += 4 + n
        (n,) = struct.unpack_from(">I", block, offset)
        headers[name] = block[offset + 4 : offset + 4 + n].decode()
        offset += 4 + n
    return headers


@dataclass
class Frame:
    control: bool
    frame_type: int  # control frames only
    stream_id: int  # data frames only
    flags: int
    payload: bytes


class FrameReader:
    """Splits the byte stream into frames (a frame may arrive in pieces)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            first, second = struct.unpack_from(">II", self._buf, 0)
            length = second & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            payload, self._buf = self._buf[8 : 8 + length], self._buf[8 + length :]
            control = bool(first & 0x80000000)
            frames.append(
                Frame(
                    control,
                    first & 0xFFFF if control else 0,
                    0 if control else first & 0x7FFFFFFF,
                    second >> 24,
                    payload,
                )
            )
        return frames


@dataclass
class ExecStreams:
    """The stream ids the client opened, by ``streamType``."""

    by_type: dict[str, int] = field(default_factory=dict)


class SpdySession:
    """One upgraded connection: reads frames (fed by aiohttp), answers streams, writes data.

    aiohttp hands the bytes after the upgrade to whatever ``set_parser`` was given; this class
    is that parser (``feed_data``/``feed_eof``)."""

    def __init__(self, write: Callable[[bytes], None], expected: int) -> None:
        self._write = write
        self._expected = expected  # how many streams the request implies (as the kubelet counts)
        self._reader = FrameReader()
        # One zlib context per direction for the whole session, as the draft requires.
        self._inflate = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._deflate = zlib.compressobj(zdict=HEADER_DICTIONARY)
        self.streams = ExecStreams()
        self.ready = asyncio.get_running_loop().create_future()
        self.stdin: asyncio.Queue[bytes] = asyncio.Queue()  # b"" marks the end of stdin
        self.closed = asyncio.Event()

    # --- aiohttp's payload-parser interface -----------------------------------------------
    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        for frame in self._reader.feed(data):
            self._handle(frame)
        return False, b""

    def feed_eof(self) -> None:
        self._close()

    # --- frames in ----------------------------------------------------------------------
    def _handle(self, frame: Frame) -> None:
        if not frame.control:
            if frame.stream_id == self.streams.by_type.get("stdin"):
                if frame.payload:
                    self.stdin.put_nowait(frame.payload)
                if frame.flags & FLAG_FIN:
                    self.stdin.put_nowait(b"")
            return  # the error, resize and output streams carry nothing the lab acts on
        if frame.frame_type == SYN_STREAM:
            (stream_id,) = struct.unpack_from(">I", frame.payload, 0)
            stream_id &= 0x7FFFFFFF
            headers = decode_headers(self._inflate.decompress(frame.payload[10:]))
            self._reply(stream_id)
            self.streams.by_type[headers.get("streamtype", "")] = stream_id
            opened = self.streams.by_type
            if len(opened) >= self._expected and "error" in opened and not self.ready.done():
                self.ready.set_result(None)
        elif frame.frame_type == PING:
            self._write(control_frame(PING, 0, frame.payload))
        elif frame.frame_type in (GOAWAY, RST_STREAM):
            self._close()
        # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do (spdystream keeps no flow control).

    def _reply(self, stream_id: int) -> None:
        block = self._deflate.compress(encode_headers({})) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self._write(control_frame(SYN_REPLY, 0, struct.pack(">I", stream_id) + block))

    def _close(self) -> None:
        self.closed.set()
        self.stdin.put_nowait(b"")
        if not self.ready.done():
            self.ready.set_exception(ConnectionResetError("the client closed the connection"))

    # --- frames out ---------------------------------------------------------------------
    def send(self, stream_type: str, data: bytes, fin: bool = False) -> None:
        stream_id = self.streams.by_type.get(stream_type)
        if stream_id is None or self.closed.is_set():
            return
        for start in range(0, max(len(data), 1), MAX_DATA_FRAME):
            chunk = data[start : start + MAX_DATA_FRAME]
            last = start + MAX_DATA_FRAME >= len(data)
            self._write(data_frame(stream_id, FLAG_FIN if fin and last else 0, chunk))

    def goaway(self) -> None:
        if not self.closed.is_set():
            self._write(control_frame(GOAWAY, 0, struct.pack(">II", 0, 0)))


def exit_status(code: int, message: str = "") -> dict[str, object]:
    """The ``metav1.Status`` the kubelet writes on the error stream (protocol v4)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": message or f"command terminated with non-zero exit code: {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


async def serve_exec(request: web.Request, argv: list[str]) -> web.StreamResponse:
    """Upgrades ``request`` to SPDY/3.1 and runs ``argv`` (no TTY) over its streams."""
    offered = [
        v.strip()
        for h in request.headers.getall("X-Stream-Protocol-Version", [])
        for v in h.split(",")
    ]
    if PROTOCOL_V4 not in offered:
        raise web.HTTPForbidden(text=f"exec over SPDY needs {PROTOCOL_V4}; offered {offered}")
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("connection lost before the upgrade")
    tty = request.query.get("tty") in ("1", "true")
    want_stdin = request.query.get("input") in ("1", "true")
    expected = _expected_streams(request.query, tty)

    resp = web.StreamResponse(
        status=101,
        reason="Switching Protocols",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "SPDY/3.1",
            "X-Stream-Protocol-Version": PROTOCOL_V4,
        },
    )
    resp.force_close()
    writer = await resp.prepare(request)
    assert writer is not None
    session = SpdySession(transport.write, expected)
    # Nothing arrives before the client has read the 101, so no byte is parsed as HTTP.
    request.protocol.set_parser(session)  # type: ignore[arg-type]
    request.protocol.keep_alive(False)
    writer.send_headers()
    await writer.drain()

    try:
        await asyncio.wait_for(session.ready, STREAM_CREATION_TIMEOUT_S)
    except (TimeoutError, ConnectionResetError) as err:
        log.info("exec over SPDY: streams not opened (%s)", err)
        session.goaway()
        return resp
    log.info("exec (SPDY) %s %s", request.path, dict(request.query))
    code, message = await _run(session, argv, want_stdin, tty)
    session.send("error", json.dumps(exit_status(code, message)).encode(), fin=True)
    for stream_type in ("stdout", "stderr"):
        session.send(stream_type, b"", fin=True)
    session.goaway()
    return resp


def _expected_streams(query: Mapping[str, str], tty: bool) -> int:
    """The streams the kubelet waits for: error, and stdin/stdout as asked; stderr only without
    a TTY; resize with one. A client may open stderr instead of resize (cyclonus asks for a TTY
    in the request but opens the streams of a plain exec), so streams are counted, as there."""
    count = 1 + sum(query.get(param) in ("1", "true") for param in ("input", "output"))
    if tty:
        return count + 1
    return count + (query.get("error") in ("1", "true"))


async def _run(
    session: SpdySession, argv: list[str], want_stdin: bool, tty: bool
) -> tuple[int, str]:
    """Runs ``argv``; with a TTY, stderr joins stdout as on a terminal (no pseudo-terminal is
    allocated over SPDY: the lab's SPDY clients are probes, not shells)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if tty else asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as err:
        return 127, str(err)

    async def pump(stream: asyncio.StreamReader | None, stream_type: str) -> None:
        assert stream is not None
        while chunk := await stream.read(MAX_DATA_FRAME):
            session.send(stream_type, chunk)

    async def feed_stdin() -> None:
        while data := await session.stdin.get():
            if proc.stdin is not None:
                proc.stdin.write(data)
                await proc.stdin.drain()
        if proc.stdin is not None:
            proc.stdin.close()

    async def kill_when_gone() -> None:
        await session.closed.wait()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    helpers = [asyncio.create_task(kill_when_gone())]
    if want_stdin:
        helpers.append(asyncio.create_task(feed_stdin()))
    try:
        pumps = [pump(proc.stdout, "stdout")]
        if proc.stderr is not None:
            pumps.append(pump(proc.stderr, "stderr"))
        await asyncio.gather(*pumps)
        return await proc.wait(), ""
    finally:
        for task in helpers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
