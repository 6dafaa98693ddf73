"""The datapath's fixed-size flow event, as compact tuples.

`struct septum_flow_event` (bpf/include/septum/abi.h) is 112 bytes; a batch of
N events is N records back to back, so `struct.iter_unpack` turns a batch into
tuples at C speed. The flow ring stores these tuples, never protobufs: a Flow
is built only when a reader asks for one (see decoder.py). The field order
below is the header's; tests check it against `septum.dataplane.abi`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Final

from septum.dataplane import abi
from septum.dataplane.observe.errors import RecordError as RecordError

# The layout is the ABI's (septum.dataplane.abi mirrors abi.h); the index
# constants below are checked against FLOW_EVENT_FIELDS at import.
FORMAT: Final = abi.FLOW_EVENT_FORMAT
EVENT = struct.Struct(FORMAT)
# The same record behind the kernel ring buffer's 8-byte header, so a batch
# read straight out of the ring needs no copy to strip the headers.
EVENT_AFTER_HEADER = struct.Struct("<8x" + FORMAT[1:])
RAW_HEADER_BYTES: Final = 8
RAW_STRIDE: Final = EVENT_AFTER_HEADER.size  # one record read straight out of the ring
SIZE: Final = abi.FLOW_EVENT_SIZE
FIELDS: Final = abi.FLOW_EVENT_FIELDS

# Tuple indexes, named so the decoder, filters and metrics read like the header.
TIME_NS: Final = 0
BYTES: Final = 1
SRC_ADDR: Final = 2
DST_ADDR: Final = 3
SRC_IDENTITY: Final = 4
DST_IDENTITY: Final = 5
RULE_ID: Final = 6
IFINDEX: Final = 7
PACKETS: Final = 8
SUPPRESSED_DROPS: Final = 9
MATCH_TYPE: Final = 10
FLAGS: Final = 11
ENDPOINT_ID: Final = 13
SRC_PORT: Final = 14
DST_PORT: Final = 15
DROP_REASON: Final = 16
L7_PROXY_PORT: Final = 17
EVENT_TYPE: Final = 18
VERDICT: Final = 19
DIRECTION: Final = 20
IS_REPLY: Final = 21
IP_VERSION: Final = 22
PROTOCOL: Final = 23
ICMP_TYPE: Final = 24
ICMP_CODE: Final = 25
TCP_FLAGS: Final = 26
TRACE_POINT: Final = 27
# Appended to the event (after trace_point), so every index above kept its meaning.
SRC_MAC: Final = 28
DST_MAC: Final = 29

# Values from abi.h that the decoder interprets (the rest pass through as numbers).
EVENT_DROP: Final = 1
EVENT_TRACE: Final = 4
EVENT_POLICY_VERDICT: Final = 5
VERDICT_FORWARDED: Final = 1
VERDICT_DROPPED: Final = 2
VERDICT_AUDIT: Final = 4
DIR_INGRESS: Final = 1
DIR_EGRESS: Final = 2
IP_V4: Final = 1
IP_V6: Final = 2
EVENT_F_AUDIT_MODE: Final = 0x01
EVENT_F_CT_CLOSE: Final = 0x02
EVENT_F_RELATED: Final = 0x04
EVENT_F_BENCH: Final = 0x80
IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58
IPPROTO_SCTP: Final = 132

Record = tuple[Any, ...]  # one unpacked septum_flow_event (see FIELDS)

_INDEXES = {
    "time_ns": TIME_NS,
    "bytes": BYTES,
    "src_addr": SRC_ADDR,
    "dst_addr": DST_ADDR,
    "src_identity": SRC_IDENTITY,
    "dst_identity": DST_IDENTITY,
    "rule_id": RULE_ID,
    "ifindex": IFINDEX,
    "packets": PACKETS,
    "suppressed_drops": SUPPRESSED_DROPS,
    "match_type": MATCH_TYPE,
    "flags": FLAGS,
    "endpoint_id": ENDPOINT_ID,
    "src_port": SRC_PORT,
    "dst_port": DST_PORT,
    "drop_reason": DROP_REASON,
    "l7_proxy_port": L7_PROXY_PORT,
    "event_type": EVENT_TYPE,
    "verdict": VERDICT,
    "direction": DIRECTION,
    "is_reply": IS_REPLY,
    "ip_version": IP_VERSION,
    "protocol": PROTOCOL,
    "icmp_type": ICMP_TYPE,
    "icmp_code": ICMP_CODE,
    "tcp_flags": TCP_FLAGS,
    "trace_point": TRACE_POINT,
    "src_mac": SRC_MAC,
    "dst_mac": DST_MAC,
}
for _name, _index in _INDEXES.items():
    if FIELDS[_index] != _name:  # the ABI moved a field: fail at import, not with wrong flows
        raise ImportError(f"flow event field {_name!r} is not at index {_index} of the ABI")
if EVENT.size != SIZE:
    raise ImportError(f"flow event format is {EVENT.size} bytes, the ABI says {SIZE}")


_BYTES_FIELDS: Final = frozenset({"src_addr", "dst_addr", "src_mac", "dst_mac", "pad"})


def unpack_batch(batch: bytes | bytearray | memoryview, header_bytes: int = 0) -> Iterator[Record]:
    """Decode N concatenated events (each behind `header_bytes` of ring-buffer
    header: 0 or 8); refuses a torn batch instead of guessing."""
    layout = EVENT_AFTER_HEADER if header_bytes else EVENT
    if header_bytes not in (0, 8):
        raise RecordError(f"unsupported record header size {header_bytes}")
    if len(batch) % layout.size:
        raise RecordError(f"event batch of {len(batch)} bytes is not a multiple of {layout.size}")
    return layout.iter_unpack(batch)


def pack(**fields: object) -> bytes:
    """Build one event (tests and the synthetic benchmark source); unnamed fields are 0."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown flow event fields: {sorted(unknown)}")
    values = [fields.get(name, b"" if name in _BYTES_FIELDS else 0) for name in FIELDS]
    return EVENT.pack(*values)
