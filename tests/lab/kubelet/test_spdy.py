"""exec over SPDY/3.1 in the lab kubelet: the frames and header blocks a client-go SPDY client
(spdystream) sends and expects, and a whole exec through a real HTTP upgrade."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib

from aiohttp import web
from aiohttp.test_utils import TestServer

from septum.lab.kubelet import spdy


def test_dictionary_is_the_drafts() -> None:
    # The zlib stream names its dictionary by Adler-32; Go's zlib reader refuses any other.
    assert len(spdy.HEADER_DICTIONARY) == 1423
    assert zlib.adler32(spdy.HEADER_DICTIONARY) == 0xE3C6A7C2


def test_frames_split_across_reads() -> None:
    wire = spdy.control_frame(spdy.PING, 0, b"\x00\x00\x00\x01") + spdy.data_frame(5, 1, b"hi")
    reader = spdy.FrameReader()
    frames = reader.feed(wire[:5]) + reader.feed(wire[5:13]) + reader.feed(wire[13:])
    assert [(f.control, f.frame_type, f.stream_id, f.flags, f.payload) for f in frames] == [
        (True, spdy.PING, 0, 0, b"\x00\x00\x00\x01"),
        (False, 0, 5, 1, b"hi"),
    ]


def test_headers_round_trip() -> None:
    block = spdy.encode_headers({"streamType": "stdout", "x": ""})
    assert spdy.decode_headers(block) == {"streamtype": "stdout", "x": ""}


class Client:
    """The client half of a session, as spdystream behaves: one deflate context for every
    SYN_STREAM, odd stream ids, a reply awaited per stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.deflate = zlib.compressobj(zdict=spdy.HEADER_DICTIONARY)
        self.inflate = zlib.decompressobj(zdict=spdy.HEADER_DICTIONARY)
        self.frames = spdy.FrameReader()
        self.pending: list[spdy.Frame] = []

    async def frame(self) -> spdy.Frame:
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(65536), 10)
            assert data, "the server closed the connection"
            self.pending += self.frames.feed(data)
        return self.pending.pop(0)

    async def open(self, stream_id: int, stream_type: str) -> None:
        block = self.deflate.compress(spdy.encode_headers({"streamType": stream_type}))
        block += self.deflate.flush(zlib.Z_SYNC_FLUSH)
        payload = struct.pack(">IIH", stream_id, 0, 0) + block
        self.writer.write(spdy.control_frame(spdy.SYN_STREAM, 0, payload))
        reply = await self.frame()
        assert (reply.control, reply.frame_type) == (True, spdy.SYN_REPLY)
        assert struct.unpack_from(">I", reply.payload)[0] == stream_id
        assert spdy.decode_headers(self.inflate.decompress(reply.payload[4:])) == {}


async def test_exec_over_an_upgraded_connection() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await spdy.serve_exec(request, ["sh", "-c", "echo out; echo err >&2; exit 3"])

    app = web.Application()
    app.router.add_post("/exec/ns/pod/c", handler)
    async with TestServer(app) as server:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(
            b"POST /exec/ns/pod/c?output=1&error=1 HTTP/1.1\r\nHost: kubelet\r\n"
            b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
            b"X-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
        client = Client(reader, writer)
        writer.write(spdy.control_frame(spdy.PING, 0, b"\x00\x00\x00\x07"))
        ping = await client.frame()
        assert (ping.frame_type, ping.payload) == (spdy.PING, b"\x00\x00\x00\x07")
        for stream_id, stream_type in ((1, "error"), (3, "stdout"), (5, "stderr")):
            await client.open(stream_id, stream_type)

        received: dict[int, bytes] = {1: b"", 3: b"", 5: b""}
        finished: set[int] = set()
        while finished != {1, 3, 5}:
            frame = await client.frame()
            if frame.control:
                assert frame.frame_type == spdy.GOAWAY, frame
                continue
            received[frame.stream_id] += frame.payload
            if frame.flags & spdy.FLAG_FIN:
                finished.add(frame.stream_id)
        writer.close()
    assert received[3] == b"out\n"
    assert received[5] == b"err\n"
    status = json.loads(received[1])
    assert status["status"] == "Failure"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


def test_streams_expected_as_the_kubelet_counts_them() -> None:
    plain = {"output": "1", "error": "1"}
    assert spdy._expected_streams(plain, tty=False) == 3  # error, stdout, stderr
    # cyclonus: tty in the request, but the client opens error, stdout and stderr (no resize).
    assert spdy._expected_streams({**plain, "tty": "1"}, tty=True) == 3
    assert spdy._expected_streams({"input": "1", "output": "1"}, tty=True) == 4
