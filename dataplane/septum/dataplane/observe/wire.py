"""Hand-assembled GetFlowsResponse bytes around an already built message.

A GetFlowsResponse is `flow` (field 1) or `lost_events` (field 3) plus
`node_name` (1000) and `time` (1001). Concatenating encoded fields is valid
protobuf, so the Flow is serialized once and framed without copying it into a
second message object.
"""

from __future__ import annotations

import functools

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2

_TAG_FLOW = b"\x0a"  # field 1, length-delimited
_TAG_LOST = b"\x1a"  # field 3, length-delimited
_TAG_NODE_NAME = b"\xc2\x3e"  # field 1000, length-delimited
_TAG_TIME = b"\xca\x3e"  # field 1001, length-delimited


_SMALL_VARINTS = [bytes([i]) for i in range(0x80)]


def _varint(value: int) -> bytes:
    # Unrolled for the sizes a flow has (ports, lengths, nanoseconds, seconds): history
    # answers rebuild ~10 varints per flow, and the loop below cost a third of that.
    if value < 0x80:
        return _SMALL_VARINTS[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                value >> 21,
            )
        )
    if value < 0x800000000:  # 35 bits: a flow time's seconds and nanoseconds
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                ((value >> 21) & 0x7F) | 0x80,
                value >> 28,
            )
        )
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


varint = _varint


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=256)  # a node's answers all carry its one name
def _node_name(node_name: str) -> bytes:
    return _field(_TAG_NODE_NAME, node_name.encode()) if node_name else b""


def encode_flow_response(flow: flow_pb2.Flow, node_name: str) -> bytes:
    body = _field(_TAG_FLOW, flow.SerializeToString())
    return body + _node_name(node_name) + _field(_TAG_TIME, flow.time.SerializeToString())


def encode_flow_bytes_response(flow: bytes, time: bytes, node_name: str) -> bytes:
    """The same response from an already serialized Flow and its Timestamp."""
    return b"".join(
        (
            _TAG_FLOW,
            _varint(len(flow)),
            flow,
            _node_name(node_name),
            _TAG_TIME,
            _varint(len(time)),
            time,
        )
    )


def encode_lost_response(
    source: int, count: int, first_ns: int, last_ns: int, node_name: str
) -> bytes:
    lost = flow_pb2.LostEvent(source=source, num_events_lost=count)  # type: ignore[arg-type]
    lost.first.FromNanoseconds(first_ns)
    lost.last.FromNanoseconds(last_ns)
    time_bytes = lost.last.SerializeToString()
    return (
        _field(_TAG_LOST, lost.SerializeToString())
        + _node_name(node_name)
        + _field(_TAG_TIME, time_bytes)
    )


def decode_response(data: bytes) -> observer_pb2.GetFlowsResponse:
    return observer_pb2.GetFlowsResponse.FromString(data)
