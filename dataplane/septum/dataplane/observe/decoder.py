"""Turn one compact datapath record into a Hubble `flow.Flow`.

This is the only place protobuf objects are built from records, and it runs
lazily: the ring calls it once per record that some reader actually wants,
then shares the result (and its serialized form) with every other reader.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
import uuid
from dataclasses import dataclass

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

from septum.dataplane import abi
from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.fqdnnames import cache_generation, fill_names
from septum.dataplane.observe.metadata import EndpointInfo, Metadata, PolicyInfo
from septum.dataplane.observe.wire import varint
from septum.wellknown.icmp import ICMPV4_TYPE_NAMES, ICMPV6_TYPE_NAMES
from septum.wellknown.reserved import SERVICE_IDENTITY_MAX, SERVICE_IDENTITY_MIN
from septum.wellknown.services import service_of

EMITTER_NAME = "Septum"


def drop_reason_desc(code: int) -> int:
    """Hubble's flow.DropReason for a datapath code (the nearest one for Septum-only codes)."""
    return abi.hubble_drop_reason(code)


def drop_reason_text(code: int) -> str:
    return abi.describe_drop_reason(code) if code else ""


def boottime_to_wall_offset_ns() -> int:
    """Add to a CLOCK_BOOTTIME stamp (bpf_ktime_get_boot_ns) to get Unix time."""
    return time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def format_address(raw: bytes, ip_version: int) -> str:
    if ip_version == r.IP_V4:
        return socket.inet_ntop(socket.AF_INET, raw[:4])
    if ip_version == r.IP_V6:
        return str(ipaddress.IPv6Address(raw))  # RFC 5952 form, as Go prints it
    return ""


_NO_MAC = bytes(6)


def format_mac(raw: bytes) -> str:
    """Lower-case "aa:bb:cc:dd:ee:ff", as Hubble prints flow.Ethernet addresses."""
    return raw.hex(":")


_TCP_FLAG_ORDER = (
    (0x02, "SYN"),
    (0x10, "ACK"),
    (0x04, "RST"),
    (0x01, "FIN"),
    (0x08, "PSH"),
    (0x20, "URG"),
    (0x40, "ECE"),
    (0x80, "CWR"),
)
# Destination Unreachable codes as Hubble's summary names them (type names are
# septum.wellknown.icmp's).
_ICMP4_UNREACH = {
    0: "Net",
    1: "Host",
    2: "Protocol",
    3: "Port",
    4: "FragmentationNeeded",
    13: "CommunicationAdministrativelyProhibited",
}
_ICMP6_UNREACH = {
    0: "NoRouteToDst",
    1: "AdminProhibited",
    3: "AddressUnreachable",
    4: "PortUnreachable",
}


def tcp_flag_names(bits: int) -> list[str]:
    """Flag names in the order Hubble's summaries list them."""
    return [name for bit, name in _TCP_FLAG_ORDER if bits & bit]


def summary(rec: r.Record) -> str:
    """Hubble's one-line summary ("TCP Flags: SYN, ACK", "ICMPv4 EchoRequest")."""
    return _summary(
        rec[r.PROTOCOL], rec[r.TCP_FLAGS], rec[r.ICMP_TYPE], rec[r.ICMP_CODE], rec[r.IP_VERSION]
    )


@functools.lru_cache(maxsize=4096)
def _summary(protocol: int, tcp_flags: int, icmp_type: int, icmp_code: int, ip_version: int) -> str:
    if protocol == r.IPPROTO_TCP:
        return "TCP Flags: " + ", ".join(tcp_flag_names(tcp_flags))
    if protocol == r.IPPROTO_UDP:
        return "UDP"
    if protocol == r.IPPROTO_SCTP:
        return "SCTP"
    if protocol in (r.IPPROTO_ICMP, r.IPPROTO_ICMPV6):
        v4 = protocol == r.IPPROTO_ICMP
        names, unreachable, codes = (
            (ICMPV4_TYPE_NAMES, 3, _ICMP4_UNREACH) if v4 else (ICMPV6_TYPE_NAMES, 1, _ICMP6_UNREACH)
        )
        name = names.get(icmp_type, str(icmp_type))
        if icmp_type == unreachable:  # Destination Unreachable: the code names why
            name += f"({codes.get(icmp_code, str(icmp_code))})"
        return ("ICMPv4 " if v4 else "ICMPv6 ") + name
    if ip_version == r.IP_V4:
        return "IPv4"
    if ip_version == r.IP_V6:
        return "IPv6"
    return ""


@dataclass
class DecoderConfig:
    node_name: str
    node_labels: tuple[str, ...] = ()
    emitter_version: str = ""
    cluster_name: str = ""


# Field numbers of what encode() appends to a Flow template (checked at import).
_FLOW_TIME = 1
_FLOW_UUID = 34
_FLOW_L4 = 6
# Layer4's TCP (1), UDP (2), SCTP (5) fields, tagged as length-delimited.
_PORTED_L4 = {r.IPPROTO_TCP: b"\x0a", r.IPPROTO_UDP: b"\x12", r.IPPROTO_SCTP: b"\x2a"}
# Record shapes kept (a few hundred bytes each: at most ~10 MB); past it, restart.
_MAX_TEMPLATES = 16384
_TAG_TIME = varint(_FLOW_TIME << 3 | 2)
_TAG_UUID = varint(_FLOW_UUID << 3 | 2)
_TAG_L4 = varint(_FLOW_L4 << 3 | 2)
_ONE_BYTE = [bytes((i,)) for i in range(0x80)]  # the varint of a length under 128
_fields = flow_pb2.Flow.DESCRIPTOR.fields_by_name
_layer4 = flow_pb2.Layer4.DESCRIPTOR.fields_by_name
if (
    (_fields["time"].number, _fields["uuid"].number, _fields["l4"].number)
    != (_FLOW_TIME, _FLOW_UUID, _FLOW_L4)
    or (_layer4["TCP"].number, _layer4["UDP"].number, _layer4["SCTP"].number) != (1, 2, 5)
    or any(
        (m.fields_by_name["source_port"].number, m.fields_by_name["destination_port"].number)
        != (1, 2)
        for m in (flow_pb2.TCP.DESCRIPTOR, flow_pb2.UDP.DESCRIPTOR, flow_pb2.SCTP.DESCRIPTOR)
    )
):
    raise ImportError("flow.proto field numbers changed: update decoder.encode")


def add_policy(
    target: RepeatedCompositeFieldContainer[flow_pb2.Policy], policy: PolicyInfo
) -> None:
    """Append Hubble's Policy reference of `policy` to a flow's repeated *_allowed_by /
    *_denied_by field (the L3/L4 decoder's and the L7 flows' alike)."""
    target.add(
        name=policy.name,
        namespace=policy.namespace,
        kind=policy.kind,
        labels=list(policy.labels),
        revision=policy.revision,
    )


def shape_key(rec: r.Record) -> tuple[object, ...]:
    """What a record's Flow template depends on: everything but time, bytes, packets and
    ports. The MACs (last fields) are in rec[16:], so records differing only in Ethernet
    addresses never share a template."""
    return rec[2:8] + rec[9:14] + rec[16:]


def format_flow_uuid(prefix: str, seq: int) -> str:
    """A flow's UUID: the agent run's random prefix, then its ring sequence number."""
    return f"{prefix}{(seq >> 48) & 0xFFFF:04x}-{seq & 0xFFFFFFFFFFFF:012x}"


def finish_flow(
    template: bytes, wall_ns: int, flow_uuid: str, protocol: int, src_port: int, dst_port: int
) -> tuple[bytes, bytes]:
    """(serialized Flow, serialized Flow.time): a shape's template with the three fields
    that differ between flows of one connection appended (protobuf merges them).

    Written for speed (a history answer calls it once per stored flow): one join, and the
    lengths that are always under 128 (a Timestamp, the ports) are one byte."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    time_bytes = (b"\x08" + varint(seconds) if seconds else b"") + (
        b"\x10" + varint(nanos) if nanos else b""
    )
    uuid_bytes = flow_uuid.encode()
    parts = [
        template,
        _TAG_TIME,
        _ONE_BYTE[len(time_bytes)],
        time_bytes,
        _TAG_UUID,
        varint(len(uuid_bytes)),
        uuid_bytes,
    ]
    layer = _PORTED_L4.get(protocol)
    if layer is not None and (src_port or dst_port):
        ports = (b"\x08" + varint(src_port) if src_port else b"") + (
            b"\x10" + varint(dst_port) if dst_port else b""
        )
        parts += (_TAG_L4, _ONE_BYTE[len(ports) + 2], layer, _ONE_BYTE[len(ports)], ports)
    return b"".join(parts), time_bytes


class FlowDecoder:
    """Record tuple + metadata -> Flow. Stateless apart from the clock offset."""

    def __init__(self, metadata: Metadata, config: DecoderConfig) -> None:
        self._metadata = metadata
        self._config = config
        self.wall_offset_ns = boottime_to_wall_offset_ns()
        # A per-process random prefix makes flow UUIDs unique across agent
        # restarts while the rest is the ring sequence number (no RNG per flow).
        self._uuid_prefix = str(uuid.uuid4())[:19]  # "xxxxxxxx-xxxx-xxxx-"
        # Fields every flow of this node shares, serialized once and merged in C.
        static = flow_pb2.Flow(node_name=config.node_name, Type=flow_pb2.L3_L4)
        static.emitter.name = EMITTER_NAME
        static.emitter.version = config.emitter_version
        static.node_labels.extend(config.node_labels)
        self._static = static.SerializeToString()
        # Encoded Endpoint messages by (ip, identity, local endpoint id), valid
        # for one metadata generation (agents bump it on every change).
        self._endpoint_cache: dict[tuple[str, int, int], bytes] = {}
        self._endpoint_cache_generation = -1
        # Serialized Flows without time/uuid/ports, by record shape (see encode).
        self._templates: dict[tuple[object, ...], bytes] = {}
        self._template_generation = -1

    def encode(self, rec: r.Record, seq: int) -> tuple[bytes, bytes]:
        """(serialized Flow, serialized Flow.time) equal to decode(rec, seq), without
        building a Flow: the streaming hot path.

        Flows of one connection differ only in time, uuid and ports, so the rest
        is serialized once per shape (cached per metadata generation) and the
        three are appended. Protobuf parsers merge repeated occurrences of a
        message field and the appended fields are absent from the template, so
        the bytes parse to exactly the decoded Flow (tests check equality)."""
        flow_bytes, time_bytes = finish_flow(
            self.template(rec),
            int(rec[r.TIME_NS]) + self.wall_offset_ns,
            self.flow_uuid(seq),
            rec[r.PROTOCOL],
            rec[r.SRC_PORT],
            rec[r.DST_PORT],
        )
        return flow_bytes, time_bytes

    def template(self, rec: r.Record) -> bytes:
        """The serialized Flow of `rec` without time, uuid and ports (cached per shape)."""
        generation = self.metadata_generation
        if generation != self._template_generation or len(self._templates) > _MAX_TEMPLATES:
            self._templates.clear()
            self._template_generation = generation
        key = shape_key(rec)
        template = self._templates.get(key)
        if template is None:
            shape = list(rec)
            shape[r.TIME_NS] = shape[r.SRC_PORT] = shape[r.DST_PORT] = 0
            flow = self.decode(tuple(shape), 0)
            flow.ClearField("time")
            flow.ClearField("uuid")
            template = self._templates[key] = flow.SerializeToString()
        return template

    @property
    def metadata_generation(self) -> int:
        """Moves on every change of the metadata and of the names its `fqdn_names` offers
        (0 when it keeps no generation): templates carry source/destination_names."""
        return cache_generation(self._metadata)

    @property
    def uuid_prefix(self) -> str:
        """What every flow UUID of this decoder starts with (one per agent run)."""
        return self._uuid_prefix

    def wall_time_ns(self, rec: r.Record) -> int:
        return int(rec[r.TIME_NS]) + self.wall_offset_ns

    def flow_uuid(self, seq: int) -> str:
        return format_flow_uuid(self._uuid_prefix, seq)

    def decode(self, rec: r.Record, seq: int) -> flow_pb2.Flow:
        flow = flow_pb2.Flow.FromString(self._static)
        wall_ns = self.wall_time_ns(rec)
        flow.time.seconds, flow.time.nanos = divmod(wall_ns, 1_000_000_000)
        flow.uuid = self.flow_uuid(seq)

        verdict = rec[r.VERDICT]
        flow.verdict = verdict
        reason = rec[r.DROP_REASON]
        if reason == abi.DropReason.POLICY_DENY and self._is_default_deny(rec[r.RULE_ID]):
            reason = abi.DropReason.POLICY_DENIED  # no allow matched: Hubble's "Policy denied"
        if reason:
            flow.drop_reason = reason
            flow.drop_reason_desc = drop_reason_desc(reason)  # type: ignore[assignment]
        event_type = rec[r.EVENT_TYPE]
        flow.event_type.type = event_type
        if event_type == r.EVENT_DROP:
            flow.event_type.sub_type = reason
        elif event_type == r.EVENT_TRACE:
            # Cilium's trace sub-types number "to-endpoint" 0; the rest equal
            # Hubble's observation points.
            point = rec[r.TRACE_POINT]
            flow.event_type.sub_type = 0 if point == flow_pb2.TO_ENDPOINT else point
        direction = rec[r.DIRECTION]
        flow.traffic_direction = direction
        flow.trace_observation_point = rec[r.TRACE_POINT]
        flow.policy_match_type = rec[r.MATCH_TYPE]
        is_reply = bool(rec[r.IS_REPLY])
        flow.is_reply.value = is_reply
        flow.reply = is_reply
        if event_type == r.EVENT_POLICY_VERDICT:
            flow.trace_reason = flow_pb2.NEW
        elif event_type == r.EVENT_TRACE and rec[r.FLAGS] & r.EVENT_F_RELATED:
            flow.trace_reason = flow_pb2.RELATED
        elif event_type == r.EVENT_TRACE:
            flow.trace_reason = flow_pb2.REPLY if is_reply else flow_pb2.ESTABLISHED
        if rec[r.IFINDEX]:
            flow.interface.index = rec[r.IFINDEX]
        if rec[r.L7_PROXY_PORT]:
            flow.proxy_port = rec[r.L7_PROXY_PORT]

        ip_version = rec[r.IP_VERSION]
        src_ip = format_address(rec[r.SRC_ADDR], ip_version)
        dst_ip = format_address(rec[r.DST_ADDR], ip_version)
        if ip_version:
            flow.IP.source = src_ip
            flow.IP.destination = dst_ip
            flow.IP.ipVersion = ip_version
        src_mac, dst_mac = rec[r.SRC_MAC], rec[r.DST_MAC]
        if src_mac != _NO_MAC or dst_mac != _NO_MAC:  # all zero: no Ethernet header
            flow.ethernet.source = format_mac(src_mac)
            flow.ethernet.destination = format_mac(dst_mac)
        self._fill_l4(flow, rec)

        generation = getattr(self._metadata, "generation", 0)
        if generation != self._endpoint_cache_generation or len(self._endpoint_cache) > 65536:
            self._endpoint_cache.clear()
            self._endpoint_cache_generation = generation
        endpoint_id = rec[r.ENDPOINT_ID]
        # The hook says which side the local pod is on: traffic_direction is the
        # connection's (a reply of an ingress connection is still "ingress").
        point = rec[r.TRACE_POINT]
        if point == flow_pb2.FROM_ENDPOINT:
            local_is_source = True
        elif point == flow_pb2.TO_ENDPOINT:
            local_is_source = False
        else:
            local_is_source = direction == r.DIR_EGRESS
        self._endpoint(
            flow.source, src_ip, rec[r.SRC_IDENTITY], endpoint_id if local_is_source else 0
        )
        self._endpoint(
            flow.destination, dst_ip, rec[r.DST_IDENTITY], 0 if local_is_source else endpoint_id
        )
        service = self._service(rec[r.DST_IDENTITY])
        if service is not None:  # a Service frontend (the datapath decides before the DNAT)
            flow.destination_service.namespace, flow.destination_service.name = service
        self._fill_policy(flow, rec, verdict, direction)
        # --fqdn: names the DNS proxy learned (septum.dataplane.observe.fqdnnames; issue 14)
        fill_names(flow, getattr(self._metadata, "fqdn_names", None))
        return flow

    def _service(self, identity: int) -> tuple[str, str] | None:
        """The Service a destination identity stands for (a service identity's labels)."""
        if identity < SERVICE_IDENTITY_MIN or identity > SERVICE_IDENTITY_MAX:
            return None
        return service_of(self._metadata.identity_labels(identity))

    @staticmethod
    def _fill_l4(flow: flow_pb2.Flow, rec: r.Record) -> None:
        protocol = rec[r.PROTOCOL]
        flow.Summary = summary(rec)
        if protocol == r.IPPROTO_TCP:
            tcp = flow.l4.TCP
            tcp.source_port = rec[r.SRC_PORT]
            tcp.destination_port = rec[r.DST_PORT]
            bits = rec[r.TCP_FLAGS]
            flags = tcp.flags
            flags.SetInParent()
            if bits & 0x01:
                flags.FIN = True
            if bits & 0x02:
                flags.SYN = True
            if bits & 0x04:
                flags.RST = True
            if bits & 0x08:
                flags.PSH = True
            if bits & 0x10:
                flags.ACK = True
            if bits & 0x20:
                flags.URG = True
            if bits & 0x40:
                flags.ECE = True
            if bits & 0x80:
                flags.CWR = True
        elif protocol == r.IPPROTO_UDP:
            flow.l4.UDP.source_port = rec[r.SRC_PORT]
            flow.l4.UDP.destination_port = rec[r.DST_PORT]
        elif protocol == r.IPPROTO_SCTP:
            flow.l4.SCTP.source_port = rec[r.SRC_PORT]
            flow.l4.SCTP.destination_port = rec[r.DST_PORT]
        elif protocol == r.IPPROTO_ICMP:
            flow.l4.ICMPv4.type = rec[r.ICMP_TYPE]
            flow.l4.ICMPv4.code = rec[r.ICMP_CODE]
            flow.l4.ICMPv4.SetInParent()
        elif protocol == r.IPPROTO_ICMPV6:
            flow.l4.ICMPv6.type = rec[r.ICMP_TYPE]
            flow.l4.ICMPv6.code = rec[r.ICMP_CODE]
            flow.l4.ICMPv6.SetInParent()

    def _endpoint(self, endpoint: flow_pb2.Endpoint, ip: str, identity: int, local_id: int) -> None:
        key = (ip, identity, local_id)
        encoded = self._endpoint_cache.get(key)
        if encoded is None:
            built = flow_pb2.Endpoint()
            local = self._metadata.endpoint(local_id) if local_id else None
            self._fill_endpoint(built, ip, identity, local)
            encoded = self._endpoint_cache[key] = built.SerializeToString()
        endpoint.MergeFromString(encoded)

    def _fill_endpoint(
        self,
        endpoint: flow_pb2.Endpoint,
        ip: str,
        identity: int,
        local: EndpointInfo | None,
    ) -> None:
        info = local or (self._metadata.endpoint_by_ip(ip) if ip else None)
        endpoint.identity = identity
        if info is None:
            endpoint.labels.extend(self._metadata.identity_labels(identity))
            return
        endpoint.ID = info.endpoint_id
        endpoint.namespace = info.namespace
        endpoint.pod_name = info.pod_name
        endpoint.cluster_name = info.cluster_name or self._config.cluster_name
        labels = info.labels or self._metadata.identity_labels(identity)
        endpoint.labels.extend(sorted(labels))
        for workload in info.workloads:
            endpoint.workloads.add(name=workload.name, kind=workload.kind)

    def _is_default_deny(self, rule_id: int) -> bool:
        policy = self._metadata.policy(rule_id) if rule_id else None
        return policy is not None and policy.default_deny

    def _fill_policy(
        self, flow: flow_pb2.Flow, rec: r.Record, verdict: int, direction: int
    ) -> None:
        rule_id = rec[r.RULE_ID]
        if not rule_id:
            return
        policy = self._metadata.policy(rule_id)
        if policy is None:
            return
        # An AUDIT verdict is always a would-be drop: the packets of an audited connection after
        # its first carry no drop reason (the established path sets none), yet the policy that
        # would have dropped them still denied them.
        if verdict in (r.VERDICT_DROPPED, r.VERDICT_AUDIT):
            target = flow.ingress_denied_by if direction == r.DIR_INGRESS else flow.egress_denied_by
        else:
            target = (
                flow.ingress_allowed_by if direction == r.DIR_INGRESS else flow.egress_allowed_by
            )
        add_policy(target, policy)
