"""The datapath ABI: Python mirror of ``bpf/include/septum/abi.h``. THIS IS THE CONTRACT.

Every struct, enum and map key/value that crosses the kernel boundary is defined once in
``abi.h`` and mirrored here, field for field and member for member, with the same names.  The
loader checks the size and every field offset of each ctypes mirror (:data:`MIRRORS`) and every
member of each Python enum (:data:`ENUM_MIRRORS`) against the BTF of the compiled object at
load time (``septum.dataplane.btfcheck``), so a drift between the two fails loudly instead of
corrupting maps.  Change both files in the same commit.  (Longer than the ~600 lines a module
should have, on purpose: it mirrors one header, and splitting the mirror would split the contract
a reviewer compares with abi.h side by side.)  The module-level flag and identity
constants (``EP_F_AUDIT``, ``IDENTITY_WORLD``, ...) are members of those enums under their
older names.

What other parts of Septum may rely on:

* :class:`FlowEvent` is a FIXED-SIZE record of :data:`FLOW_EVENT_SIZE` (112) bytes.  A batch of
  events is ``N * 112`` concatenated bytes and decodes with
  ``struct.iter_unpack(FLOW_EVENT_FORMAT, batch)``; the tuple order is :data:`FLOW_EVENT_FIELDS`
  (the format is derived from the ctypes fields by :func:`struct_format`).
  Ports are host byte order; addresses are 16 bytes (IPv4 in the first four, the rest zero);
  ``src_mac``/``dst_mac`` are the packet's Ethernet addresses (6 bytes each, the last fields);
  ``time_ns`` is CLOCK_BOOTTIME nanoseconds (convert with ``time.clock_gettime_ns`` offsets).
* :class:`Verdict`, :class:`TrafficDirection`, :class:`TraceObservationPoint` and
  :class:`EventType` use Hubble's / Cilium's numbers.  :class:`DropReason` uses Hubble's
  ``flow.DropReason`` numbers wherever Hubble has the reason (same name there: see
  :data:`HUBBLE_DROP_REASON_NAME`); reasons Hubble lacks (one per header boundary, the XDP
  prefilter) use 220..239, a range Hubble leaves unused, and map to the closest Hubble
  reason through :func:`hubble_drop_reason`.
* ``bytes``/``packets`` of an event count what the event covers: the packet itself, or for an
  aggregated flow every packet of that direction since the flow's previous event.
  ``suppressed_drops`` counts drops of the same flow and reason that were rate-limited away.
* Lost events (ring buffer full) are counted in the kernel, per CPU (map ``sep_lost``).

* Reserved identities are ``septum.wellknown.reserved.ReservedIdentity`` (the one Python
  definition); ``abi.h`` names the ones the datapath uses, checked against it.

This module imports nothing from the rest of Septum but the stdlib-only ``septum.wellknown``:
it is the bottom of the datapath.
"""

from __future__ import annotations

import ctypes
import enum
import struct
from typing import Final, NamedTuple

from septum.wellknown.reserved import ReservedIdentity

# ---- enums (each checked against the enum of the same name in abi.h: ENUM_MIRRORS) -------


class AbiVersion(enum.IntEnum):
    ABI_VERSION = 1


ABI_VERSION: Final = AbiVersion.ABI_VERSION


class Verdict(enum.IntEnum):
    """Hubble ``flow.Verdict`` numbers."""

    UNKNOWN = 0
    FORWARDED = 1
    DROPPED = 2
    AUDIT = 4


class TrafficDirection(enum.IntEnum):
    """Hubble ``flow.TrafficDirection``: relative to the pod (INGRESS = towards it)."""

    UNKNOWN = 0
    INGRESS = 1
    EGRESS = 2


class DropReason(enum.IntEnum):
    """Why a packet was dropped; Hubble's numbers where Hubble has the reason."""

    NONE = 0
    INVALID_SOURCE_IP = 132
    POLICY_DENIED = 133
    INVALID_PACKET = 134
    UNSUPPORTED_L3_PROTOCOL = 139
    NO_LOCAL_ENDPOINT = 152
    CT_MAP_INSERTION_FAILED = 155
    INVALID_IPV6_EXTENSION_HEADER = 156
    FRAG_NOT_FOUND = 175
    PROXY_LOOKUP_FAILED = 178
    PROXY_ASSIGN_FAILED = 179
    POLICY_DENY = 181
    TRUNCATED_ETHERNET = 220
    TRUNCATED_IPV4 = 221
    INVALID_IPV4_IHL = 222
    INVALID_IPV4_LENGTH = 223
    TRUNCATED_IPV6 = 224
    INVALID_IPV6_LENGTH = 225
    TRUNCATED_TCP = 226
    INVALID_TCP_DATA_OFFSET = 227
    TRUNCATED_UDP = 228
    TRUNCATED_SCTP = 229
    TRUNCATED_ICMP = 230
    TRUNCATED_ICMPV6 = 231
    INVALID_IP_VERSION = 232
    PREFILTER_DENIED = 233


class ProxyMark(enum.IntEnum):
    """``skb->mark`` values of the L7 redirect (``enum septum_proxy_mark``, bpf/lib/proxy.h):
    see :mod:`septum.dataplane.l7redirect` for their use."""

    MARK_MAGIC_MASK = 0x0F00
    MARK_TO_PROXY = 0x0200
    MARK_FROM_PROXY_INGRESS = 0x0A00
    MARK_FROM_PROXY_EGRESS = 0x0B00
    MARK_DELIVERED = 0x0700  # local delivery, out of the destination's veth (neighbour)
    PROXY_ROUTE_TABLE = 2004


class CounterSlots(enum.IntEnum):
    """Dimensions of the per-CPU counters (``sep_counters``): see :func:`counter_index`."""

    DIRECTION_SLOTS = 3
    VERDICT_SLOTS = 8
    DROP_REASON_SLOTS = 256


DIRECTION_SLOTS: Final = CounterSlots.DIRECTION_SLOTS
VERDICT_SLOTS: Final = CounterSlots.VERDICT_SLOTS
DROP_REASON_SLOTS: Final = CounterSlots.DROP_REASON_SLOTS

DROP_REASON_DESCRIPTION: Final[dict[DropReason, str]] = {
    DropReason.NONE: "not dropped",
    DropReason.INVALID_SOURCE_IP: "source address is not one of the pod's addresses",
    DropReason.POLICY_DENIED: "policy denied: no allow entry matched (default deny)",
    DropReason.INVALID_PACKET: "invalid packet",
    DropReason.UNSUPPORTED_L3_PROTOCOL: "unsupported L3 protocol (ethertype)",
    DropReason.NO_LOCAL_ENDPOINT: "no local endpoint for this interface",
    DropReason.CT_MAP_INSERTION_FAILED: "conntrack map insertion failed",
    DropReason.INVALID_IPV6_EXTENSION_HEADER: "invalid or too many IPv6 extension headers",
    DropReason.FRAG_NOT_FOUND: "non-first fragment whose first fragment was not seen",
    DropReason.PROXY_LOOKUP_FAILED: "L7 redirect: no proxy socket is listening (fail closed)",
    DropReason.PROXY_ASSIGN_FAILED: "L7 redirect: the packet could not be given to the proxy",
    DropReason.POLICY_DENY: "policy deny: an explicit deny entry matched",
    DropReason.TRUNCATED_ETHERNET: "truncated Ethernet header",
    DropReason.TRUNCATED_IPV4: "truncated IPv4 header",
    DropReason.INVALID_IPV4_IHL: "invalid IPv4 header length (IHL)",
    DropReason.INVALID_IPV4_LENGTH: "invalid IPv4 total length",
    DropReason.TRUNCATED_IPV6: "truncated IPv6 header",
    DropReason.INVALID_IPV6_LENGTH: "invalid IPv6 payload length",
    DropReason.TRUNCATED_TCP: "truncated TCP header",
    DropReason.INVALID_TCP_DATA_OFFSET: "invalid TCP data offset",
    DropReason.TRUNCATED_UDP: "truncated UDP header",
    DropReason.TRUNCATED_SCTP: "truncated SCTP header",
    DropReason.TRUNCATED_ICMP: "truncated ICMP header",
    DropReason.TRUNCATED_ICMPV6: "truncated ICMPv6 header",
    DropReason.INVALID_IP_VERSION: "IP version does not match the ethertype",
    DropReason.PREFILTER_DENIED: "source CIDR is on the node's XDP deny list (prefilter)",
}

# Hubble flow.DropReason name for every reason that has the same number in Hubble.
HUBBLE_DROP_REASON_NAME: Final[dict[DropReason, str]] = {
    DropReason.NONE: "DROP_REASON_UNKNOWN",
    DropReason.INVALID_SOURCE_IP: "INVALID_SOURCE_IP",
    DropReason.POLICY_DENIED: "POLICY_DENIED",
    DropReason.INVALID_PACKET: "INVALID_PACKET_DROPPED",
    DropReason.UNSUPPORTED_L3_PROTOCOL: "UNSUPPORTED_L3_PROTOCOL",
    DropReason.NO_LOCAL_ENDPOINT: "NO_MATCHING_LOCAL_CONTAINER_FOUND",
    DropReason.CT_MAP_INSERTION_FAILED: "CT_MAP_INSERTION_FAILED",
    DropReason.INVALID_IPV6_EXTENSION_HEADER: "INVALID_IPV6_EXTENSION_HEADER",
    DropReason.FRAG_NOT_FOUND: "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND",
    DropReason.PROXY_LOOKUP_FAILED: "SOCKET_LOOKUP_FAILED",
    DropReason.PROXY_ASSIGN_FAILED: "SOCKET_ASSIGN_FAILED",
    DropReason.POLICY_DENY: "POLICY_DENY",
}

# Septum-only reasons -> the closest Hubble reason number (for drop_reason_desc).
_HUBBLE_FALLBACK: Final[dict[DropReason, int]] = {
    DropReason.TRUNCATED_ETHERNET: 134,
    DropReason.TRUNCATED_IPV4: 134,
    DropReason.INVALID_IPV4_IHL: 134,
    DropReason.INVALID_IPV4_LENGTH: 134,
    DropReason.TRUNCATED_IPV6: 134,
    DropReason.INVALID_IPV6_LENGTH: 134,
    DropReason.TRUNCATED_TCP: 135,
    DropReason.INVALID_TCP_DATA_OFFSET: 135,
    DropReason.TRUNCATED_UDP: 135,
    DropReason.TRUNCATED_SCTP: 135,
    DropReason.TRUNCATED_ICMP: 135,
    DropReason.TRUNCATED_ICMPV6: 135,
    DropReason.INVALID_IP_VERSION: 134,
    DropReason.PREFILTER_DENIED: 133,
}


def hubble_drop_reason(reason: int) -> int:
    """The Hubble ``flow.DropReason`` number for a Septum drop reason (identity where shared)."""
    try:
        member = DropReason(reason)
    except ValueError:
        return 0
    return _HUBBLE_FALLBACK.get(member, int(member))


def describe_drop_reason(reason: int) -> str:
    try:
        return DROP_REASON_DESCRIPTION[DropReason(reason)]
    except ValueError:
        return f"unknown drop reason {reason}"


class EventType(enum.IntEnum):
    """Cilium monitor MessageType numbers (Hubble ``CiliumEventType.type``)."""

    DROP = 1
    TRACE = 4
    POLICY_VERDICT = 5


class TraceObservationPoint(enum.IntEnum):
    """Hubble ``flow.TraceObservationPoint`` numbers."""

    UNKNOWN_POINT = 0
    FROM_ENDPOINT = 5
    FROM_NETWORK = 10
    TO_NETWORK = 11
    TO_ENDPOINT = 101


class MatchType(enum.IntEnum):
    """Cilium monitor PolicyMatchType numbers (Hubble ``flow.policy_match_type``)."""

    NONE = 0
    L3_ONLY = 1
    L3_L4 = 2
    L4_ONLY = 3
    ALL = 4


class PolicyAction(enum.IntEnum):
    NONE = 0  # a bucket head without an L3-only entry
    ALLOW = 1
    DENY = 2


class IPVersion(enum.IntEnum):
    """Hubble ``flow.IPVersion`` numbers."""

    NONE = 0
    V4 = 1
    V6 = 2


class TcpFlag(enum.IntFlag):
    """TCP flags as they sit in byte 13 of the TCP header."""

    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


class CtState(enum.IntEnum):
    NEW = 0
    SYN_SENT = 1
    ESTABLISHED = 2
    CLOSING = 3


class CtFlag(enum.IntFlag):
    """Bits of ``CtEntry.flags``."""

    REPLY_SEEN = 0x01  # a reply went through
    LOCAL = 0x02  # both ends are pods of this node; the connection skips the node's stack


# Reserved identities the datapath uses (abi.h's septum_reserved_identity names a subset).
IDENTITY_ANY: Final = ReservedIdentity.UNKNOWN  # in policy keys: the "any peer" bucket
IDENTITY_HOST: Final = ReservedIdentity.HOST
IDENTITY_WORLD: Final = ReservedIdentity.WORLD  # every address the ipcache does not know


class EventFlag(enum.IntFlag):
    """Bits of ``FlowEvent.flags``."""

    AUDIT_MODE = 0x01  # the endpoint was in audit mode
    CT_CLOSE = 0x02  # the flow closed (FIN/RST)
    RELATED = 0x04  # an ICMP error about a tracked connection
    BENCH = 0x80  # emitted by bench_emit, not by a packet


EVENT_F_AUDIT_MODE: Final = EventFlag.AUDIT_MODE
EVENT_F_CT_CLOSE: Final = EventFlag.CT_CLOSE
EVENT_F_RELATED: Final = EventFlag.RELATED
EVENT_F_BENCH: Final = EventFlag.BENCH


class EndpointFlag(enum.IntFlag):
    """Bits of ``Endpoint.flags``."""

    ENFORCE_INGRESS = 0x01  # a policy selects the pod for ingress
    ENFORCE_EGRESS = 0x02
    AUDIT = 0x04  # would-be drops pass with verdict AUDIT
    CHECK_SOURCE = 0x08  # drop egress from addresses the pod does not own
    HAS_IPV4 = 0x10
    HAS_IPV6 = 0x20
    ANY_PEER_INGRESS = 0x40  # the any-peer policy bucket exists for ingress
    ANY_PEER_EGRESS = 0x80


EP_F_ENFORCE_INGRESS: Final = EndpointFlag.ENFORCE_INGRESS
EP_F_ENFORCE_EGRESS: Final = EndpointFlag.ENFORCE_EGRESS
EP_F_AUDIT: Final = EndpointFlag.AUDIT
EP_F_CHECK_SOURCE: Final = EndpointFlag.CHECK_SOURCE
EP_F_HAS_IPV4: Final = EndpointFlag.HAS_IPV4
EP_F_HAS_IPV6: Final = EndpointFlag.HAS_IPV6
EP_F_ANY_PEER_INGRESS: Final = EndpointFlag.ANY_PEER_INGRESS
EP_F_ANY_PEER_EGRESS: Final = EndpointFlag.ANY_PEER_EGRESS


class EndpointPolicyFlag(enum.IntFlag):
    """Bits of ``Endpoint.policy_flags``: the exact (peer, protocol, port) key goes first."""

    EXACT_FIRST_INGRESS = 0x01
    EXACT_FIRST_EGRESS = 0x02


EP_POLICY_F_EXACT_FIRST_INGRESS: Final = EndpointPolicyFlag.EXACT_FIRST_INGRESS
EP_POLICY_F_EXACT_FIRST_EGRESS: Final = EndpointPolicyFlag.EXACT_FIRST_EGRESS


class PolicyFlag(enum.IntFlag):
    """Bits of ``PolicyValue.flags``."""

    AUDIT = 0x01  # this entry's deny only audits
    HAS_EXACT = 0x02  # bucket head: (id, proto, port) entries exist
    HAS_PROTO = 0x04  # bucket head: (id, proto, any port) entries exist
    HAS_RANGE = 0x08  # bucket head: port-range entries exist


POLICY_F_AUDIT: Final = PolicyFlag.AUDIT
POLICY_F_HAS_EXACT: Final = PolicyFlag.HAS_EXACT
POLICY_F_HAS_PROTO: Final = PolicyFlag.HAS_PROTO
POLICY_F_HAS_RANGE: Final = PolicyFlag.HAS_RANGE


class PolicyPortFlag(enum.IntFlag):
    """A policy key's "port" for ICMP/ICMPv6: ICMP_TYPE | the type (0 stays "any type")."""

    ICMP_TYPE = 0x100


POLICY_ICMP_TYPE: Final = PolicyPortFlag.ICMP_TYPE


class ConfigFlag(enum.IntFlag):
    """Bits of ``Config.flags``."""

    REVOKE_ON_POLICY_CHANGE = 0x01  # re-check established flows on a new revision
    BENCH_NEW_FLOWS = 0x02  # benchmark only: a new connection on every test-run repeat
    BENCH_FORCE_NEW = 0x04  # benchmark only: ignore conntrack hits
    LOCAL_DELIVERY = 0x08  # pod-to-pod on this node skips the node's stack (off: legacy)


CFG_F_REVOKE_ON_POLICY_CHANGE: Final = ConfigFlag.REVOKE_ON_POLICY_CHANGE
CFG_F_BENCH_NEW_FLOWS: Final = ConfigFlag.BENCH_NEW_FLOWS
CFG_F_BENCH_FORCE_NEW: Final = ConfigFlag.BENCH_FORCE_NEW
CFG_F_LOCAL_DELIVERY: Final = ConfigFlag.LOCAL_DELIVERY


class KeyLayout(enum.IntEnum):
    """How map keys are laid out beyond their fields."""

    LPM_ADDR_PREFIX_FIXED = 32  # LpmAddrKey prefixes count family+pad first
    POLICY_RANGE_PREFIX_FIXED = 80  # PolicyRangeKey prefixes: endpoint .. pad, then the port
    CT4_IFINDEX_BITS = 24  # Ct4Key holds the ifindex in 24 bits, the protocol above


LPM_ADDR_PREFIX_FIXED: Final = KeyLayout.LPM_ADDR_PREFIX_FIXED
POLICY_RANGE_PREFIX_FIXED: Final = KeyLayout.POLICY_RANGE_PREFIX_FIXED

# ---- map names (as in the object; pins live under /sys/fs/bpf/septum/<node>/<name>) ------

MAP_ENDPOINTS: Final = "sep_endpoints"
MAP_IPCACHE: Final = "sep_ipcache"  # CIDRs (LPM)
MAP_IPCACHE_HOST: Final = "sep_ipcache_h"  # exact /32 and /128 (hash)
MAP_POLICY: Final = "sep_policy"  # exact keys + bucket heads (hash)
MAP_POLICY_RANGES: Final = "sep_policy_rng"  # port ranges (LPM)
MAP_CONNTRACK4: Final = "sep_ct4"  # IPv4 flows (16-byte key)
MAP_CONNTRACK6: Final = "sep_ct6"  # IPv6 flows (and IPv4 ones of an ifindex >= 2**24)
CT4_IFINDEX_BITS: Final = KeyLayout.CT4_IFINDEX_BITS
CT4_IFINDEX_MASK: Final = (1 << CT4_IFINDEX_BITS) - 1
MAP_FRAGMENTS: Final = "sep_frags"
MAP_DROP_RATELIMIT: Final = "sep_drop_rl"
MAP_EVENTS: Final = "sep_events"
MAP_COUNTERS: Final = "sep_counters"
MAP_LOST_EVENTS: Final = "sep_lost"
MAP_CONFIG: Final = "sep_config"
MAP_PREFILTER: Final = "sep_prefilter"
MAP_LOCAL_ADDRS: Final = "sep_local_addrs"  # addresses of this node's pods -> host veth

PROG_FROM_POD: Final = "septum_from_pod"  # tc ingress of the host veth (pod egress)
PROG_TO_POD: Final = "septum_to_pod"  # tc egress of the host veth (pod ingress)
PROG_XDP_PREFILTER: Final = "septum_xdp_prefilter"
PROG_FROM_NETDEV: Final = "septum_from_netdev"  # tc ingress of a node interface (host ingress)
PROG_TO_NETDEV: Final = "septum_to_netdev"  # tc egress of a node interface (host egress)
PROG_BENCH_EMIT: Final = "bench_emit"  # never attached: one event per test run
PROG_BENCH_EMPTY: Final = "bench_empty"  # never attached: the empty tc baseline
# never attached: only the map operations and event a new IPv4 connection cannot skip
PROG_BENCH_NEW_FLOOR: Final = "bench_new_floor"
# never attached: writes jiffies_64 (the conntrack clock) into the test-run packet
PROG_JIFFIES: Final = "septum_jiffies"

# ---- structs -----------------------------------------------------------------------------

_STRUCT_CODES: Final[dict[type, str]] = {
    ctypes.c_uint8: "B",
    ctypes.c_uint16: "H",
    ctypes.c_uint32: "I",
    ctypes.c_uint64: "Q",
}


def struct_format(mirror: type[ctypes.Structure]) -> str:
    """The ``struct`` module format (little-endian, standard sizes) of a ctypes mirror: one item
    per field in order, arrays as ``Ns`` (N bytes), padding the compiler adds as ``x``."""
    items = ["<"]
    offset = 0
    for field in mirror._fields_:
        name, field_type = field[0], field[1]
        field_offset = getattr(mirror, name).offset
        items.append("x" * (field_offset - offset))
        if field_type in _STRUCT_CODES:
            items.append(_STRUCT_CODES[field_type])
        elif issubclass(field_type, ctypes.Array):
            items.append(f"{ctypes.sizeof(field_type)}s")  # addresses, MACs, padding: bytes
        else:
            raise TypeError(f"{mirror.__name__}.{name}: no struct format for {field_type}")
        offset = field_offset + ctypes.sizeof(field_type)
    items.append("x" * (ctypes.sizeof(mirror) - offset))
    return "".join(items)


Addr16 = ctypes.c_uint8 * 16
Mac6 = ctypes.c_uint8 * 6


class FlowEvent(ctypes.Structure):
    _fields_ = [
        ("time_ns", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("src_addr", Addr16),
        ("dst_addr", Addr16),
        ("src_identity", ctypes.c_uint32),
        ("dst_identity", ctypes.c_uint32),
        ("rule_id", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("packets", ctypes.c_uint32),
        ("suppressed_drops", ctypes.c_uint32),
        ("match_type", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("reserved", ctypes.c_uint16),
        ("endpoint_id", ctypes.c_uint16),
        ("src_port", ctypes.c_uint16),
        ("dst_port", ctypes.c_uint16),
        ("drop_reason", ctypes.c_uint16),
        ("l7_proxy_port", ctypes.c_uint16),
        ("event_type", ctypes.c_uint8),
        ("verdict", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("is_reply", ctypes.c_uint8),
        ("ip_version", ctypes.c_uint8),
        ("protocol", ctypes.c_uint8),
        ("icmp_type", ctypes.c_uint8),
        ("icmp_code", ctypes.c_uint8),
        ("tcp_flags", ctypes.c_uint8),
        ("trace_point", ctypes.c_uint8),
        ("src_mac", Mac6),
        ("dst_mac", Mac6),
        ("pad", ctypes.c_uint8 * 4),
    ]


# struct.iter_unpack format of one FlowEvent and the names of the tuple it yields, in order.
FLOW_EVENT_FORMAT: Final = struct_format(FlowEvent)
FLOW_EVENT_FIELDS: Final[tuple[str, ...]] = tuple(field[0] for field in FlowEvent._fields_)
FLOW_EVENT_SIZE: Final = 112
# A BPF ring-buffer record is an 8-byte header then the data, padded to 8 bytes.
RINGBUF_HEADER_SIZE: Final = 8
RINGBUF_RECORD_STRIDE: Final = RINGBUF_HEADER_SIZE + FLOW_EVENT_SIZE


class HostKey(ctypes.Structure):
    _fields_ = [("family", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3), ("addr", Addr16)]


class LpmAddrKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("family", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
        ("addr", Addr16),
    ]


class IpcacheValue(ctypes.Structure):
    _fields_ = [("identity", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class LocalAddr(ctypes.Structure):
    _fields_ = [
        ("ifindex", ctypes.c_uint32),
        ("mac", ctypes.c_uint8 * 6),  # the host veth's
        ("pad", ctypes.c_uint8 * 2),
    ]


class PrefilterValue(ctypes.Structure):
    _fields_ = [("rule_id", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class EndpointKey(ctypes.Structure):
    _fields_ = [("ifindex", ctypes.c_uint32)]


class Endpoint(ctypes.Structure):
    _fields_ = [
        ("identity", ctypes.c_uint32),
        ("policy_revision", ctypes.c_uint32),
        ("endpoint_id", ctypes.c_uint16),
        ("flags", ctypes.c_uint8),
        ("policy_generation", ctypes.c_uint8),
        ("ipv4", ctypes.c_uint8 * 4),
        ("ipv6", Addr16),
        ("policy_flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class PolicyKey(ctypes.Structure):
    _fields_ = [
        ("endpoint_id", ctypes.c_uint16),
        ("generation", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("peer_identity", ctypes.c_uint32),
        ("protocol", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("dport_be", ctypes.c_uint16),
    ]


class PolicyRangeKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("endpoint_id", ctypes.c_uint16),
        ("generation", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("peer_identity", ctypes.c_uint32),
        ("protocol", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("dport_be", ctypes.c_uint16),
    ]


class PolicyValue(ctypes.Structure):
    _fields_ = [
        ("rule_id", ctypes.c_uint32),
        ("l7_proxy_port", ctypes.c_uint16),
        ("action", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("match_type", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class CtKey(ctypes.Structure):
    _fields_ = [
        ("src_addr", Addr16),
        ("dst_addr", Addr16),
        ("sport_be", ctypes.c_uint16),
        ("dport_be", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("protocol", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("ip_version", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class Ct4Key(ctypes.Structure):
    _fields_ = [
        ("src_addr", ctypes.c_uint8 * 4),
        ("dst_addr", ctypes.c_uint8 * 4),
        ("sport_be", ctypes.c_uint16),
        ("dport_be", ctypes.c_uint16),
        ("ifindex_protocol", ctypes.c_uint32),  # ifindex | protocol << CT4_IFINDEX_BITS
    ]

    @property
    def ifindex(self) -> int:
        return int(self.ifindex_protocol) & CT4_IFINDEX_MASK

    @property
    def protocol(self) -> int:
        return int(self.ifindex_protocol) >> CT4_IFINDEX_BITS

    def widened(self) -> CtKey:
        """The same flow as a CtKey (addresses in the first 4 of 16 bytes, as in events)."""
        key = CtKey(
            sport_be=self.sport_be,
            dport_be=self.dport_be,
            ifindex=self.ifindex,
            protocol=self.protocol,
            ip_version=IPVersion.V4,
        )
        key.src_addr[:4] = self.src_addr[:]
        key.dst_addr[:4] = self.dst_addr[:]
        return key


class CtEntry(ctypes.Structure):
    _fields_ = [
        ("expires", ctypes.c_uint64),  # jiffies
        ("fwd_bytes", ctypes.c_uint64),
        ("rev_bytes", ctypes.c_uint64),
        ("fwd_packets", ctypes.c_uint32),
        ("rev_packets", ctypes.c_uint32),
        ("rule_id", ctypes.c_uint32),
        ("policy_revision", ctypes.c_uint32),
        ("peer_identity", ctypes.c_uint32),
        ("l7_proxy_port", ctypes.c_uint16),
        ("verdict", ctypes.c_uint8),
        ("match_type", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("fwd_flags_seen", ctypes.c_uint8),
        ("rev_flags_seen", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),  # CtFlag bits
        ("drop_reason", ctypes.c_uint16),
        ("orig_direction", ctypes.c_uint8),
        ("orig_swapped", ctypes.c_uint8),
    ]


class FragKey(ctypes.Structure):
    _fields_ = [
        ("src_addr", Addr16),
        ("dst_addr", Addr16),
        ("id", ctypes.c_uint32),
        ("protocol", ctypes.c_uint8),
        ("ip_version", ctypes.c_uint8),
        ("pad", ctypes.c_uint16),
    ]


class FragValue(ctypes.Structure):
    _fields_ = [
        ("sport_be", ctypes.c_uint16),
        ("dport_be", ctypes.c_uint16),
        ("protocol", ctypes.c_uint8),  # the first fragment's L4 protocol
        ("pad", ctypes.c_uint8 * 3),
    ]


class DropKey(ctypes.Structure):
    _fields_ = [
        ("flow_hash", ctypes.c_uint64),
        ("ifindex", ctypes.c_uint32),
        ("direction", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("drop_reason", ctypes.c_uint16),
    ]


class DropValue(ctypes.Structure):
    _fields_ = [
        ("last_event", ctypes.c_uint64),  # jiffies
        ("suppressed", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class Counter(ctypes.Structure):
    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class Config(ctypes.Structure):
    _fields_ = [
        ("ct_timeout_tcp_syn_s", ctypes.c_uint32),
        ("ct_timeout_tcp_established_s", ctypes.c_uint32),
        ("ct_timeout_tcp_close_s", ctypes.c_uint32),
        ("ct_timeout_other_s", ctypes.c_uint32),
        ("drop_event_interval_ms", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("kernel_hz", ctypes.c_uint32),  # 0: NodeDatapath.write_config fills it in
    ]


COUNTER_ENTRIES: Final = DIRECTION_SLOTS * VERDICT_SLOTS * DROP_REASON_SLOTS


def counter_index(direction: int, verdict: int, reason: int) -> int:
    """Index into ``sep_counters`` (SEPTUM_COUNTER_INDEX in abi.h)."""
    return ((direction * VERDICT_SLOTS) + verdict) * DROP_REASON_SLOTS + (
        reason & (DROP_REASON_SLOTS - 1)
    )


# C struct name in the object's BTF -> its mirror: the loader checks every one at load time.
MIRRORS: Final[dict[str, type[ctypes.Structure]]] = {
    "septum_flow_event": FlowEvent,
    "septum_lpm_addr_key": LpmAddrKey,
    "septum_ipcache_value": IpcacheValue,
    "septum_prefilter_value": PrefilterValue,
    "septum_local_addr": LocalAddr,
    "septum_endpoint_key": EndpointKey,
    "septum_endpoint": Endpoint,
    "septum_host_key": HostKey,
    "septum_policy_key": PolicyKey,
    "septum_policy_range_key": PolicyRangeKey,
    "septum_policy_value": PolicyValue,
    "septum_ct_key": CtKey,
    "septum_ct4_key": Ct4Key,
    "septum_ct_entry": CtEntry,
    "septum_frag_key": FragKey,
    "septum_frag_value": FragValue,
    "septum_drop_key": DropKey,
    "septum_drop_value": DropValue,
    "septum_counter": Counter,
    "septum_config": Config,
}


class EnumMirror(NamedTuple):
    """A Python enum mirroring a C enum of abi.h: the C member of each Python member is named
    ``c_prefix + member name``.  ``complete``: the C enum has every Python member too (else it
    names only the subset the datapath uses)."""

    python: type[enum.IntEnum] | type[enum.IntFlag]
    c_prefix: str
    complete: bool = True


# C enum name in the object's BTF -> its mirror: the loader checks every one at load time.
ENUM_MIRRORS: Final[dict[str, EnumMirror]] = {
    "septum_abi_version": EnumMirror(AbiVersion, "SEPTUM_"),
    "septum_verdict": EnumMirror(Verdict, "SEPTUM_VERDICT_"),
    "septum_direction": EnumMirror(TrafficDirection, "SEPTUM_DIR_"),
    "septum_drop_reason": EnumMirror(DropReason, "SEPTUM_DROP_"),
    "septum_event_type": EnumMirror(EventType, "SEPTUM_EVENT_"),
    "septum_trace_point": EnumMirror(TraceObservationPoint, "SEPTUM_TRACE_"),
    "septum_match_type": EnumMirror(MatchType, "SEPTUM_MATCH_"),
    "septum_policy_action": EnumMirror(PolicyAction, "SEPTUM_ACTION_"),
    "septum_ip_version": EnumMirror(IPVersion, "SEPTUM_IP_"),
    "septum_tcp_flag": EnumMirror(TcpFlag, "SEPTUM_TCP_"),
    "septum_reserved_identity": EnumMirror(ReservedIdentity, "SEPTUM_IDENTITY_", complete=False),
    "septum_event_flag": EnumMirror(EventFlag, "SEPTUM_EVENT_F_"),
    "septum_endpoint_flag": EnumMirror(EndpointFlag, "SEPTUM_EP_F_"),
    "septum_endpoint_policy_flag": EnumMirror(EndpointPolicyFlag, "SEPTUM_EP_POLICY_F_"),
    "septum_policy_flag": EnumMirror(PolicyFlag, "SEPTUM_POLICY_F_"),
    "septum_policy_port_flag": EnumMirror(PolicyPortFlag, "SEPTUM_POLICY_"),
    "septum_config_flag": EnumMirror(ConfigFlag, "SEPTUM_CFG_F_"),
    "septum_key_layout": EnumMirror(KeyLayout, "SEPTUM_"),
    "septum_counter_slots": EnumMirror(CounterSlots, "SEPTUM_"),
    "septum_ct_state": EnumMirror(CtState, "SEPTUM_CT_"),
    "septum_ct_flag": EnumMirror(CtFlag, "SEPTUM_CT_F_"),
    "septum_proxy_mark": EnumMirror(ProxyMark, "SEPTUM_"),
}

assert ctypes.sizeof(FlowEvent) == FLOW_EVENT_SIZE == struct.calcsize(FLOW_EVENT_FORMAT)
