"""What the relay reads from a serialized GetFlowsResponse, without building the message.

A relay forwards the agents' messages as they came (one serialization, on the agent); to merge
them it needs only which kind each one is and its `time` (field 1001). Fields are walked in
wire order, whatever order the sender used, so a Hubble agent's messages read as well as
Septum's.
"""

from __future__ import annotations

from typing import Final

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.relay import relay_pb2

# GetFlowsResponse's oneof response_types, by field number.
FLOW: Final = 1
NODE_STATUS: Final = 2
LOST_EVENTS: Final = 3
_TIME_FIELD: Final = 1001
_TIMESTAMP_SECONDS, _TIMESTAMP_NANOS = 1, 2


class MessageError(ValueError):
    """A GetFlowsResponse the relay cannot walk (truncated or not protobuf)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MessageError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _timestamp_ns(data: bytes) -> int:
    seconds = nanos = 0
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        if key & 7 != 0:
            raise MessageError("Timestamp: unexpected wire type")
        value, pos = _varint(data, pos)
        if key >> 3 == _TIMESTAMP_SECONDS:
            seconds = value
        elif key >> 3 == _TIMESTAMP_NANOS:
            nanos = value
    return seconds * 1_000_000_000 + nanos


def scan(data: bytes) -> tuple[int, int]:
    """(kind, time_ns) of a serialized GetFlowsResponse; kind 0 when it has no response field,
    time 0 when it has no time."""
    kind = 0
    time_ns = 0
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise MessageError(f"field {field}: length {length} runs past the message")
            if field == _TIME_FIELD:
                time_ns = _timestamp_ns(data[pos : pos + length])
            elif field in (FLOW, NODE_STATUS, LOST_EVENTS):
                kind = field
            pos += length
        elif wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise MessageError(f"field {field}: unsupported wire type {wire_type}")
    if pos != end:
        raise MessageError("truncated field")
    return kind, time_ns


def lost_count(data: bytes) -> tuple[int, int]:
    """(source, num_events_lost) of a lost_events response (rare: parsed in full)."""
    lost = observer_pb2.GetFlowsResponse.FromString(data).lost_events
    return int(lost.source), int(lost.num_events_lost)


def node_status(state: int, node_names: list[str], message: str, time_ns: int) -> bytes:
    """A GetFlowsResponse carrying a NodeStatusEvent, as Hubble Relay sends them."""
    response = observer_pb2.GetFlowsResponse(
        node_status=relay_pb2.NodeStatusEvent(
            state_change=state,  # type: ignore[arg-type]
            node_names=node_names,
            message=message,
        )
    )
    response.time.FromNanoseconds(time_ns)
    return response.SerializeToString()


def lost_events(source: int, count: int, time_ns: int, node_name: str) -> bytes:
    """A GetFlowsResponse reporting `count` events the relay could not deliver."""
    response = observer_pb2.GetFlowsResponse(
        lost_events=flow_pb2.LostEvent(source=source, num_events_lost=count),  # type: ignore[arg-type]
        node_name=node_name,
    )
    response.lost_events.first.FromNanoseconds(time_ns)
    response.lost_events.last.FromNanoseconds(time_ns)
    response.time.FromNanoseconds(time_ns)
    return response.SerializeToString()
