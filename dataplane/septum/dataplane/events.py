"""Flow events decoded from the ring buffer's fixed-size records (see septum.dataplane.abi)."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from septum.dataplane import abi

_STRIDE_FORMAT: Final = struct.Struct("<8x" + abi.FLOW_EVENT_FORMAT[1:])
_EVENT_FORMAT: Final = struct.Struct(abi.FLOW_EVENT_FORMAT)


def boot_to_wall_offset_ns() -> int:
    """Add to an event's CLOCK_BOOTTIME time_ns to get Unix-epoch nanoseconds."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def format_mac(raw: bytes) -> str:
    """Lower-case "aa:bb:cc:dd:ee:ff", as Hubble prints Ethernet addresses."""
    return raw.hex(":")


def format_address(raw: bytes, ip_version: int) -> str:
    if ip_version == abi.IPVersion.V4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if ip_version == abi.IPVersion.V6:
        return socket.inet_ntop(socket.AF_INET6, raw)
    return ""


@dataclass(frozen=True, slots=True)
class Flow:
    """One decoded flow event (field meanings: struct septum_flow_event in abi.h)."""

    time_ns: int
    bytes: int
    src_ip: str
    dst_ip: str
    src_identity: int
    dst_identity: int
    rule_id: int
    ifindex: int
    packets: int
    suppressed_drops: int
    match_type: int
    flags: int
    endpoint_id: int
    src_port: int
    dst_port: int
    drop_reason: int
    l7_proxy_port: int
    event_type: int
    verdict: int
    direction: int
    is_reply: bool
    ip_version: int
    protocol: int
    icmp_type: int
    icmp_code: int
    tcp_flags: int
    trace_point: int
    src_mac: str
    dst_mac: str

    @property
    def drop_reason_description(self) -> str:
        return abi.describe_drop_reason(self.drop_reason)


def _flow(fields: tuple[int | bytes, ...]) -> Flow:
    (
        time_ns, nbytes, src, dst, src_id, dst_id, rule_id, ifindex, packets, suppressed,
        match_type, flags, _reserved, endpoint_id, sport, dport, reason, l7, event_type,
        verdict, direction, is_reply, ip_version, protocol, icmp_type, icmp_code, tcp_flags,
        trace_point, src_mac, dst_mac, _pad,
    ) = fields  # fmt: skip
    assert isinstance(src, bytes) and isinstance(dst, bytes)
    assert isinstance(src_mac, bytes) and isinstance(dst_mac, bytes)
    version = int(ip_version)
    return Flow(
        int(time_ns), int(nbytes), format_address(src, version), format_address(dst, version),
        int(src_id), int(dst_id), int(rule_id), int(ifindex), int(packets), int(suppressed),
        int(match_type), int(flags), int(endpoint_id), int(sport), int(dport), int(reason),
        int(l7), int(event_type), int(verdict), int(direction), bool(is_reply), version,
        int(protocol), int(icmp_type), int(icmp_code), int(tcp_flags), int(trace_point),
        format_mac(src_mac), format_mac(dst_mac),
    )  # fmt: skip


def decode_events(raw: bytes) -> list[Flow]:
    """Decode N concatenated 112-byte records (RingBufferReader.read_raw)."""
    return [_flow(fields) for fields in _EVENT_FORMAT.iter_unpack(raw)]


def decode_records(chunk: bytes) -> list[Flow]:
    """Decode ring records with their 8-byte headers (RingBufferReader.read_records)."""
    return [_flow(fields) for fields in _STRIDE_FORMAT.iter_unpack(chunk)]


def iter_flows(batches: Iterable[bytes]) -> Iterator[Flow]:
    for batch in batches:
        yield from decode_events(batch)
