"""Build raw Ethernet frames (IPv4/IPv6, TCP/UDP/SCTP/ICMP/ICMPv6) for BPF_PROG_TEST_RUN.

Every length field can be overridden so tests can build the malformed packets the
datapath must survive.  Checksums are left zero: the datapath never verifies them.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import Final

ETH_P_IP: Final = 0x0800
ETH_P_IPV6: Final = 0x86DD
ETH_P_ARP: Final = 0x0806
SRC_MAC: Final = bytes.fromhex("020000000001")
DST_MAC: Final = bytes.fromhex("020000000002")
TCP_FIN: Final = 0x01
TCP_SYN: Final = 0x02
TCP_RST: Final = 0x04
TCP_PSH: Final = 0x08
TCP_ACK: Final = 0x10


def ether(payload: bytes, ethertype: int = ETH_P_IP) -> bytes:
    return DST_MAC + SRC_MAC + struct.pack("!H", ethertype) + payload


def ipv4(
    src: str,
    dst: str,
    protocol: int,
    payload: bytes,
    *,
    options: bytes = b"",
    ihl: int | None = None,
    total_length: int | None = None,
    ident: int = 1,
    fragment_offset: int = 0,
    more_fragments: bool = False,
    version: int = 4,
) -> bytes:
    header_len = 20 + len(options)
    ihl_value = header_len // 4 if ihl is None else ihl
    length = header_len + len(payload) if total_length is None else total_length
    flags = (0x2000 if more_fragments else 0) | (fragment_offset & 0x1FFF)
    header = struct.pack(
        "!BBHHHBBH4s4s",
        (version << 4) | (ihl_value & 0xF),
        0,
        length & 0xFFFF,
        ident,
        flags,
        64,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    return header + options + payload


def ipv6(
    src: str,
    dst: str,
    next_header: int,
    payload: bytes,
    *,
    payload_length: int | None = None,
    version: int = 6,
) -> bytes:
    length = len(payload) if payload_length is None else payload_length
    header = struct.pack(
        "!IHBB16s16s",
        version << 28,
        length & 0xFFFF,
        next_header,
        64,
        ipaddress.IPv6Address(src).packed,
        ipaddress.IPv6Address(dst).packed,
    )
    return header + payload


def ipv6_extensions(
    headers: Sequence[tuple[int, int]], final_next_header: int
) -> tuple[int, bytes]:
    """Chain of (type, length in 8-octet units beyond the first) generic extension headers;
    returns (the first header's type, the bytes).  Fragment headers use ipv6_fragment."""
    if not headers:
        return final_next_header, b""
    chunks = []
    for index, (_, units) in enumerate(headers):
        following = headers[index + 1][0] if index + 1 < len(headers) else final_next_header
        size = (units + 1) * 8
        chunks.append(struct.pack("!BB", following, units) + bytes(size - 2))
    return headers[0][0], b"".join(chunks)


def ipv6_fragment(next_header: int, offset_units: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", next_header, 0, (offset_units << 3) | int(more), ident)


def tcp(
    sport: int, dport: int, flags: int = TCP_SYN, *, doff: int = 5, payload: bytes = b""
) -> bytes:
    options = bytes(max(doff - 5, 0) * 4)
    return (
        struct.pack("!HHIIBBHHH", sport, dport, 1, 0, (doff & 0xF) << 4, flags, 65535, 0, 0)
        + options
        + payload
    )


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHII", sport, dport, 0, 0) + payload


def icmp(kind: int, code: int = 0, ident: int = 7, sequence: int = 1) -> bytes:
    return struct.pack("!BBHHH", kind, code, 0, ident, sequence) + b"septum"


def tcp4(src: str, dst: str, sport: int, dport: int, flags: int = TCP_SYN) -> bytes:
    return ether(ipv4(src, dst, 6, tcp(sport, dport, flags)))


def tcp6(src: str, dst: str, sport: int, dport: int, flags: int = TCP_SYN) -> bytes:
    return ether(ipv6(src, dst, 6, tcp(sport, dport, flags)), ETH_P_IPV6)


def udp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ether(ipv4(src, dst, 17, udp(sport, dport, b"septum")))


def sctp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ether(ipv4(src, dst, 132, sctp(sport, dport)))


def sctp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ether(ipv6(src, dst, 132, sctp(sport, dport)), ETH_P_IPV6)
