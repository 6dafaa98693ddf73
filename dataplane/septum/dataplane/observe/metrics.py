"""Prometheus metrics with Hubble's names, computed from compact records.

The ingest path only counts composite keys (one C-level Counter update per
batch; for raw ring-buffer batches the keys are struct-unpacked straight from
the bytes, five integers an event); label values are worked out at scrape time. Label cardinality is
bounded: every label is an enum except `port`, which keeps the first
`max_ports` distinct destination ports per protocol and counts the rest as
"other"; reply traffic never adds ports (as in Hubble, replies are skipped).

Enabled metrics are chosen like Hubble's `--hubble-metrics`: a `;`-separated
list of names (flow, drop, policy, tcp, port-distribution, icmp, lost), plus
Septum's own `septum` health metrics.
"""

from __future__ import annotations

import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from septum.dataplane import abi
from septum.dataplane.abi import TcpFlag
from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import drop_reason_desc
from septum.dataplane.observe.errors import MetricsConfigError as MetricsConfigError
from septum.wellknown.icmp import ICMPV4_TYPE_NAMES, ICMPV6_TYPE_NAMES
from septum.wellknown.reserved import ReservedIdentity

ALL_METRICS = ("flow", "drop", "policy", "tcp", "port-distribution", "icmp", "lost", "septum")
DEFAULT_MAX_PORTS = 1024

_KEY = itemgetter(
    r.EVENT_TYPE,
    r.VERDICT,
    r.DROP_REASON,
    r.DIRECTION,
    r.PROTOCOL,
    r.IP_VERSION,
    r.TCP_FLAGS,
    r.DST_PORT,
    r.IS_REPLY,
    r.ICMP_TYPE,
    r.ICMP_CODE,
    r.MATCH_TYPE,
    r.TRACE_POINT,
    r.SRC_IDENTITY,
)


def _raw_key_struct() -> struct.Struct:
    """The fields _KEY takes, read from a raw record behind its 8-byte ring-buffer
    header as five little-endian integers: src_identity, match_type, dst_port with
    drop_reason (16 bits each), event_type..icmp_code (8 bytes), tcp_flags with
    trace_point.  Built from the ABI's offsets; a moved field fails at import."""
    fields = {name: getattr(abi.FlowEvent, name) for name, *_ in abi.FlowEvent._fields_}
    runs = (  # (first field, struct code, the fields the code covers in order)
        ("src_identity", "I", ("src_identity",)),
        ("match_type", "B", ("match_type",)),
        ("dst_port", "I", ("dst_port", "drop_reason")),
        (
            "event_type",
            "Q",
            ("event_type", "verdict", "direction", "is_reply", "ip_version", "protocol")
            + ("icmp_type", "icmp_code"),
        ),
        ("tcp_flags", "H", ("tcp_flags", "trace_point")),
    )
    fmt, at = "<8x", 0
    for first, code, covered in runs:
        offset = fields[first].offset
        width = struct.calcsize("<" + code)
        if (
            offset < at
            or sum(fields[n].size for n in covered) != width
            or any(
                fields[n].offset
                != fields[covered[0]].offset + sum(fields[m].size for m in covered[:i])
                for i, n in enumerate(covered)
            )
        ):
            raise ImportError(f"flow event fields {covered} are not where metrics reads them")
        fmt += f"{offset - at}x{code}" if offset > at else code
        at = offset + width
    return struct.Struct(fmt + f"{abi.FLOW_EVENT_SIZE - at}x")


_RAW_KEY = _raw_key_struct()
_RAW_IS_REPLY = 0xFF << 24  # is_reply's byte in _RAW_KEY's event_type..icmp_code word
_DST_PORT_AT, _IS_REPLY_AT = 7, 8  # their places in a _KEY tuple


def _key_of_raw(raw: tuple[int, int, int, int, int]) -> tuple[int, ...]:
    """A _RAW_KEY tuple as the _KEY tuple of the same record."""
    src_identity, match, port_reason, octets, flags_point = raw
    return (
        octets & 0xFF,  # event_type
        (octets >> 8) & 0xFF,  # verdict
        port_reason >> 16,  # drop_reason
        (octets >> 16) & 0xFF,  # direction
        (octets >> 40) & 0xFF,  # protocol
        (octets >> 32) & 0xFF,  # ip_version
        flags_point & 0xFF,  # tcp_flags
        port_reason & 0xFFFF,  # dst_port
        (octets >> 24) & 0xFF,  # is_reply
        (octets >> 48) & 0xFF,  # icmp_type
        octets >> 56,  # icmp_code
        match,
        flags_point >> 8,  # trace_point
        src_identity,
    )


_PROTOCOL_NAMES = {
    r.IPPROTO_TCP: "TCP",
    r.IPPROTO_UDP: "UDP",
    r.IPPROTO_SCTP: "SCTP",
    r.IPPROTO_ICMP: "ICMPv4",
    r.IPPROTO_ICMPV6: "ICMPv6",
}
# Cilium's trace observation point names as Hubble's flow metric shows them.
_TRACE_POINT_NAMES = {0: "to-endpoint", 5: "from-endpoint", 10: "from-network", 101: "to-endpoint"}
# Plain ints: the per-batch loop tests them on every TCP event (IntFlag operators cost more).
_FIN, _SYN, _RST, _ACK = (
    int(flag) for flag in (TcpFlag.FIN, TcpFlag.SYN, TcpFlag.RST, TcpFlag.ACK)
)
_MATCH_NAMES = {0: "none", 1: "l3-only", 2: "l3-l4", 3: "l4-only", 4: "all"}
_LOST_SOURCE_NAMES = {
    flow_pb2.PERF_EVENT_RING_BUFFER: "perf_event_ring_buffer",
    flow_pb2.OBSERVER_EVENTS_QUEUE: "observer_events_queue",
    flow_pb2.HUBBLE_RING_BUFFER: "hubble_ring_buffer",
}


def parse_enabled(spec: str) -> frozenset[str]:
    """`"flow;drop;tcp"` -> the set; names may carry Hubble `:options`, ignored."""
    names = {part.split(":", 1)[0].strip() for part in spec.split(";") if part.strip()}
    unknown = names - set(ALL_METRICS)
    if unknown:
        raise MetricsConfigError(
            f"metrics: unknown metric(s) {sorted(unknown)}; choose from {', '.join(ALL_METRICS)}"
        )
    return frozenset(names)


@dataclass
class DatapathHealth:
    """Septum's own health numbers, read at scrape time from the datapath."""

    endpoints: Callable[[], int] = lambda: 0
    map_fill: Callable[[], Mapping[str, tuple[int, int]]] = dict  # map -> (entries, capacity)
    counters: Callable[[], Mapping[tuple[int, int, int], tuple[int, int]]] = dict
    # (direction, verdict, reason) -> (packets, bytes)


@dataclass(eq=False)  # identity-hashed: the registry keys collectors by object
class FlowMetrics(Collector):
    enabled: frozenset[str] = frozenset(ALL_METRICS)
    max_ports: int = DEFAULT_MAX_PORTS
    lost_by_source: Callable[[], Mapping[int, int]] = dict
    buffer_fill: Callable[[], tuple[int, int]] = lambda: (0, 0)
    health: DatapathHealth = field(default_factory=DatapathHealth)
    _pending: Counter[tuple[int, ...]] = field(default_factory=Counter)
    _pending_raw: Counter[tuple[int, ...]] = field(default_factory=Counter)  # _RAW_KEY's
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _flows: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    _drops: Counter[tuple[str, str]] = field(default_factory=Counter)
    _policy: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    _tcp: Counter[tuple[str, str]] = field(default_factory=Counter)
    _ports: Counter[tuple[str, str]] = field(default_factory=Counter)
    _icmp: Counter[tuple[str, str]] = field(default_factory=Counter)

    def observe(self, records: Iterable[r.Record]) -> None:
        """Hot path: one composite count per record, folded into labels later."""
        with self._lock:
            self._pending.update(map(_KEY, records))
            if len(self._pending) > 20_000:
                self._fold()

    def observe_raw(self, batch: bytes | bytearray | memoryview) -> None:
        """observe() of a raw batch (each record behind its 8-byte ring-buffer header)
        without unpacking the records: only the key's fields, as five integers."""
        with self._lock:
            self._pending_raw.update(_RAW_KEY.iter_unpack(batch))
            if len(self._pending_raw) > 20_000:
                self._fold()

    def _fold(self) -> None:
        pending, self._pending = self._pending, Counter()
        raw, self._pending_raw = self._pending_raw, Counter()
        # A reply's destination port is the client's ephemeral port: a key of its own per
        # connection, and never a label (replies add no port).  Merge those keys first with
        # a few integer operations each, so the label work below runs once per label set,
        # not once per connection (3.8 us a key).
        merged: Counter[tuple[int, ...]] = Counter()
        for (identity, match, port_reason, octets, flags_point), count in raw.items():
            if octets & _RAW_IS_REPLY:
                port_reason &= 0xFFFF0000  # keeps drop_reason
            merged[(identity, match, port_reason, octets, flags_point)] += count
        for raw_key, count in merged.items():
            pending[_key_of_raw(raw_key)] += count  # type: ignore[arg-type]
        replies = [key for key in pending if key[_IS_REPLY_AT] and key[_DST_PORT_AT]]
        for key in replies:
            port_free = key[:_DST_PORT_AT] + (0,) + key[_DST_PORT_AT + 1 :]
            pending[port_free] += pending.pop(key)
        known_ports: dict[str, set[str]] = {}
        for key, count in pending.items():
            (
                etype,
                verdict,
                reason,
                direction,
                proto,
                ipver,
                tcp_flags,
                dport,
                is_reply,
                icmp_type,
                icmp_code,
                match,
                point,
                src_identity,
            ) = key
            protocol = _PROTOCOL_NAMES.get(proto, "")
            verdict_name = _enum_name(flow_pb2.Verdict, verdict)
            if etype == r.EVENT_DROP:
                type_name, subtype = "Drop", ""
            elif etype == r.EVENT_TRACE:
                type_name, subtype = "Trace", _TRACE_POINT_NAMES.get(point, str(point))
            elif etype == r.EVENT_POLICY_VERDICT:
                type_name, subtype = "PolicyVerdict", ""
            else:
                type_name, subtype = "Unknown", str(etype)
            self._flows[(protocol, type_name, subtype, verdict_name)] += count
            if verdict == r.VERDICT_DROPPED:
                reason_name = _enum_name(flow_pb2.DropReason, drop_reason_desc(reason))
                self._drops[(reason_name, protocol)] += count
            if etype == r.EVENT_POLICY_VERDICT and src_identity != ReservedIdentity.HOST:
                direction_name = _enum_name(flow_pb2.TrafficDirection, direction).lower()
                self._policy[
                    (direction_name, _MATCH_NAMES.get(match, str(match)), verdict_name.lower())
                ] += count
            forwarded = verdict == r.VERDICT_FORWARDED
            family = "IPv4" if ipver == r.IP_V4 else "IPv6" if ipver == r.IP_V6 else ""
            if forwarded and proto == r.IPPROTO_TCP:
                if tcp_flags & _FIN:
                    self._tcp[("FIN", family)] += count
                if tcp_flags & _SYN:
                    self._tcp[("SYN-ACK" if tcp_flags & _ACK else "SYN", family)] += count
                if tcp_flags & _RST:
                    self._tcp[("RST", family)] += count
            if forwarded and not is_reply and protocol:
                port = str(dport) if proto in (6, 17, 132) else "0"
                seen = known_ports.setdefault(
                    protocol, {p for (pr, p) in self._ports if pr == protocol}
                )
                if port not in seen:
                    if len(seen) >= self.max_ports:
                        port = "other"
                    seen.add(port)
                self._ports[(protocol, port)] += count
            if proto == r.IPPROTO_ICMP:
                self._icmp[("IPv4", _icmp_name(ICMPV4_TYPE_NAMES, icmp_type, icmp_code))] += count
            elif proto == r.IPPROTO_ICMPV6:
                self._icmp[("IPv6", _icmp_name(ICMPV6_TYPE_NAMES, icmp_type, icmp_code))] += count

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._fold()
            snapshots: dict[str, list[tuple[tuple[str, ...], int]]] = {
                "flow": list(self._flows.items()),
                "drop": list(self._drops.items()),
                "policy": list(self._policy.items()),
                "tcp": list(self._tcp.items()),
                "port-distribution": list(self._ports.items()),
                "icmp": list(self._icmp.items()),
            }
        specs: dict[str, tuple[str, str, list[str]]] = {
            "flow": (
                "hubble_flows_processed",
                "Total number of flows processed",
                ["protocol", "type", "subtype", "verdict"],
            ),
            "drop": ("hubble_drop", "Number of drops", ["reason", "protocol"]),
            "policy": (
                "hubble_policy_verdicts",
                "Total number of Cilium network policy verdicts",
                ["direction", "match", "action"],
            ),
            "tcp": ("hubble_tcp_flags", "TCP flag occurrences", ["flag", "family"]),
            "port-distribution": (
                "hubble_port_distribution",
                "Numbers of packets distributed by destination port",
                ["protocol", "port"],
            ),
            "icmp": ("hubble_icmp", "Number of ICMP messages", ["family", "type"]),
        }
        for name, (metric, help_text, labels) in specs.items():
            if name not in self.enabled:
                continue
            family = CounterMetricFamily(metric, help_text, labels=labels)
            for label_values, count in snapshots[name]:
                family.add_metric(list(label_values), count)
            yield family
        if "lost" in self.enabled:
            lost = CounterMetricFamily(
                "hubble_lost_events", "Number of lost events", labels=["source"]
            )
            by_source = dict(self.lost_by_source())
            for source, source_name in _LOST_SOURCE_NAMES.items():
                lost.add_metric([source_name], by_source.get(source, 0))
            yield lost
        if "septum" in self.enabled:
            yield from self._septum_metrics()

    def _septum_metrics(self) -> Iterator[Metric]:
        used, capacity = self.buffer_fill()
        fill = GaugeMetricFamily("septum_flow_buffer_flows", "Flows held in the flow ring")
        fill.add_metric([], used)
        yield fill
        cap = GaugeMetricFamily("septum_flow_buffer_capacity", "Capacity of the flow ring")
        cap.add_metric([], capacity)
        yield cap
        endpoints = GaugeMetricFamily("septum_endpoints", "Endpoints attached to the datapath")
        endpoints.add_metric([], self.health.endpoints())
        yield endpoints
        maps = GaugeMetricFamily(
            "septum_map_fill_ratio", "BPF map entries / capacity", labels=["map"]
        )
        for map_name, (entries, map_capacity) in sorted(self.health.map_fill().items()):
            maps.add_metric([map_name], entries / map_capacity if map_capacity else 0.0)
        yield maps
        packets = CounterMetricFamily(
            "septum_datapath_packets",
            "Packets seen by the datapath",
            labels=["direction", "verdict", "reason"],
        )
        octets = CounterMetricFamily(
            "septum_datapath_bytes",
            "Bytes seen by the datapath",
            labels=["direction", "verdict", "reason"],
        )
        for (direction, verdict, reason), (npkts, nbytes) in sorted(self.health.counters().items()):
            labels = [
                _enum_name(flow_pb2.TrafficDirection, direction),
                _enum_name(flow_pb2.Verdict, verdict),
                str(reason),
            ]
            packets.add_metric(labels, npkts)
            octets.add_metric(labels, nbytes)
        yield packets
        yield octets


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)


def _icmp_name(names: Mapping[int, str], icmp_type: int, icmp_code: int) -> str:
    # Hubble labels a type it has no name for as gopacket prints it: "type(code)".
    return names.get(icmp_type, f"{icmp_type}({icmp_code})")
