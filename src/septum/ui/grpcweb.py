"""gRPC-Web's wire framing (the protocol's PROTOCOL-WEB document), as pure functions.

A body is a sequence of frames: one flag byte, a 4-byte big-endian length, the payload. Flag
0x00 is a message, flag 0x80 (high bit) the trailers, which gRPC-Web moves from HTTP trailers
into the body because browsers cannot read HTTP trailers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from septum.ui.errors import FramingError

_HEADER = struct.Struct(">BI")
TRAILER_FLAG = 0x80
COMPRESSED_FLAG = 0x01
CONTENT_TYPES = ("application/grpc-web", "application/grpc-web+proto")
RESPONSE_CONTENT_TYPE = "application/grpc-web+proto"


@dataclass(frozen=True)
class Frame:
    trailer: bool
    payload: bytes


def parse_frames(body: bytes) -> list[Frame]:
    """Every frame of a request body; a truncated or compressed frame is an error."""
    frames: list[Frame] = []
    offset = 0
    while offset < len(body):
        if len(body) - offset < _HEADER.size:
            raise FramingError(f"truncated frame header at byte {offset}")
        flag, length = _HEADER.unpack_from(body, offset)
        offset += _HEADER.size
        if flag & COMPRESSED_FLAG:
            # No grpc-encoding is negotiated with the browser, so a compressed frame is a bug.
            raise FramingError("compressed frame without a negotiated grpc-encoding")
        if len(body) - offset < length:
            raise FramingError(f"frame at byte {offset - _HEADER.size} claims {length} bytes")
        frames.append(Frame(bool(flag & TRAILER_FLAG), body[offset : offset + length]))
        offset += length
    return frames


def single_message(body: bytes) -> bytes:
    """The one request message of a unary or server-streaming call."""
    messages = [f.payload for f in parse_frames(body) if not f.trailer]
    if len(messages) != 1:
        raise FramingError(f"expected one request message, got {len(messages)}")
    return messages[0]


def message_frame(payload: bytes) -> bytes:
    return _HEADER.pack(0, len(payload)) + payload


def trailer_frame(status: int, message: str = "") -> bytes:
    """The closing frame: grpc-status and a percent-encoded grpc-message, as gRPC encodes it."""
    lines = f"grpc-status:{status}\r\n"
    if message:
        lines += f"grpc-message:{_percent_encode(message)}\r\n"
    payload = lines.encode("ascii")
    return _HEADER.pack(TRAILER_FLAG, len(payload)) + payload


def _percent_encode(text: str) -> str:
    out = []
    for byte in text.encode("utf-8"):
        out.append(chr(byte) if 0x20 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}")
    return "".join(out)


def parse_timeout(value: str | None) -> float | None:
    """A grpc-timeout header ("10S", "250m") in seconds; None when absent or malformed."""
    if not value or len(value) < 2 or not value[:-1].isdigit():
        return None
    units = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
    unit = units.get(value[-1])
    return None if unit is None else int(value[:-1]) * unit
