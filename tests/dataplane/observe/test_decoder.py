"""One datapath record -> one Hubble Flow: every field the decoder fills."""

from __future__ import annotations

import time

import observe_helpers as h

from septum.dataplane import abi
from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.metadata import PolicyInfo
from septum.wellknown.reserved import SERVICE_IDENTITY_MIN
from septum.wellknown.services import SERVICE_IDENTITY_NAME_LABEL, SERVICE_IDENTITY_NAMESPACE_LABEL

DECODER = h.decoder()


def decode(*args: object, seq: int = 1, **kwargs: object) -> flow_pb2.Flow:
    return DECODER.decode(r.EVENT.unpack(h.event(*args, **kwargs)), seq)  # type: ignore[arg-type]


def test_time_is_wall_clock() -> None:
    flow = decode()
    assert abs(flow.time.ToNanoseconds() - time.time_ns()) < 2_000_000_000


def test_ethernet_addresses_as_hubble_prints_them() -> None:
    flow = decode(src_mac=bytes.fromhex("AABBCCDDEEFF"), dst_mac=bytes.fromhex("0a000000ff01"))
    assert flow.ethernet == flow_pb2.Ethernet(
        source="aa:bb:cc:dd:ee:ff", destination="0a:00:00:00:ff:01"
    )
    assert decode().ethernet.source == h.SRC_MAC.hex(":")
    # an event without an Ethernet header (all-zero addresses) has no ethernet field
    assert not decode(src_mac=bytes(6), dst_mac=bytes(6)).HasField("ethernet")


def test_sctp_and_icmpv6() -> None:
    sctp = decode(protocol=132, src_port=5000, dst_port=6000, tcp_flags=0)
    assert sctp.l4.WhichOneof("protocol") == "SCTP"
    assert (sctp.l4.SCTP.source_port, sctp.l4.SCTP.destination_port) == (5000, 6000)
    assert sctp.Summary == "SCTP"
    icmp6 = decode(
        v6=True, protocol=58, icmp_type=1, icmp_code=4, src_port=0, dst_port=0, tcp_flags=0
    )
    assert (icmp6.l4.ICMPv6.type, icmp6.l4.ICMPv6.code) == (1, 4)
    assert icmp6.Summary == "ICMPv6 DestinationUnreachable(PortUnreachable)"
    assert icmp6.IP.source == "fd00::1" and icmp6.IP.ipVersion == flow_pb2.IPv6


def test_icmp_summaries_name_types_from_septum_wellknown() -> None:
    def summary(*, v6: bool, icmp_type: int, icmp_code: int = 0) -> str:
        protocol = 58 if v6 else 1
        return decode(v6=v6, protocol=protocol, icmp_type=icmp_type, icmp_code=icmp_code,
                      src_port=0, dst_port=0, tcp_flags=0).Summary  # fmt: skip

    assert summary(v6=False, icmp_type=3, icmp_code=13) == (
        "ICMPv4 DestinationUnreachable(CommunicationAdministrativelyProhibited)"
    )
    assert summary(v6=False, icmp_type=8) == "ICMPv4 EchoRequest"
    assert summary(v6=False, icmp_type=14) == "ICMPv4 TimestampReply"  # was "14"
    assert summary(v6=True, icmp_type=137) == "ICMPv6 RedirectMessage"  # was "137"
    assert summary(v6=False, icmp_type=99) == "ICMPv4 99"


def test_unknown_peer_gets_reserved_labels() -> None:
    flow = decode("203.0.113.9", h.DEATHSTAR)
    assert flow.source.identity == 2 and list(flow.source.labels) == ["reserved:world"]
    assert not flow.source.pod_name
    assert flow.destination.pod_name == h.DEATHSTAR.pod_name


def test_septum_only_drop_reason_keeps_its_number() -> None:
    flow = decode(event_type=1, verdict=2, drop_reason=226)  # truncated TCP header
    assert flow.drop_reason == 226
    # the nearest Hubble reason, as the ABI maps it
    assert (
        flow.drop_reason_desc
        == abi.hubble_drop_reason(226)
        == flow_pb2.CT_TRUNCATED_OR_INVALID_HEADER
    )


def test_audit_and_egress_policy() -> None:
    flow = decode(
        h.XWING,
        h.DEATHSTAR,
        verdict=4,
        drop_reason=133,
        rule_id=2,
        direction=2,
        trace_point=5,
        endpoint_id=11,
    )
    assert flow.verdict == flow_pb2.AUDIT
    assert [p.name for p in flow.egress_denied_by] == ["deny-xwing"]
    assert flow.source.ID == 11 and flow.traffic_direction == flow_pb2.EGRESS


def test_later_packets_of_an_audited_connection_name_the_policy_as_denying() -> None:
    """After its first packet an audited connection's events carry no drop reason (the
    established path sets none); the policy still would have dropped them."""
    flow = decode(h.XWING, h.DEATHSTAR, verdict=4, drop_reason=0, rule_id=2, direction=2)
    assert flow.verdict == flow_pb2.AUDIT
    assert [p.name for p in flow.egress_denied_by] == ["deny-xwing"]
    assert not flow.egress_allowed_by


def test_uuids_are_unique_per_sequence_number() -> None:
    uuids = {decode(seq=seq).uuid for seq in range(100)}
    assert len(uuids) == 100 and all(len(u) == 36 for u in uuids)


def test_metadata_changes_are_seen_by_later_flows() -> None:
    md = h.metadata()
    decoder = h.FlowDecoder(md, h.DecoderConfig(node_name=h.NODE))
    rec = r.EVENT.unpack(h.event())
    assert decoder.decode(rec, 1).destination.pod_name == h.DEATHSTAR.pod_name  # type: ignore[arg-type]
    md.remove_endpoint(h.DEATHSTAR.endpoint_id)
    gone = decoder.decode(rec, 2)  # type: ignore[arg-type]
    assert not gone.destination.pod_name and gone.destination.identity == 1002


def test_a_default_deny_entry_is_reported_as_hubbles_policy_denied() -> None:
    """The engine compiles a default deny into deny entries naming the isolating policy; the
    datapath reports a deny entry as POLICY_DENY (181, "denied by denylist"), yet no deny rule
    exists: Hubble calls that POLICY_DENIED (133). An explicit deny rule stays 181."""
    md = h.metadata()
    isolating = PolicyInfo(name="rule1", namespace="default", kind="SeptumNetworkPolicy",
                           default_deny=True)  # fmt: skip
    md.add_policy(3, isolating)
    decoder = FlowDecoder(md, DecoderConfig(node_name=h.NODE))
    event = r.EVENT.unpack(
        h.event(h.XWING, h.DEATHSTAR, verdict=2, drop_reason=181, rule_id=3, event_type=1)
    )
    flow = decoder.decode(event, 1)  # type: ignore[arg-type]
    assert flow.drop_reason_desc == flow_pb2.POLICY_DENIED
    assert flow.event_type.sub_type == abi.DropReason.POLICY_DENIED
    assert [p.name for p in flow.ingress_denied_by] == ["rule1"]
    explicit = r.EVENT.unpack(h.event(h.XWING, h.DEATHSTAR, verdict=2, drop_reason=181, rule_id=2))
    assert decoder.decode(explicit, 2).drop_reason_desc == flow_pb2.POLICY_DENY  # type: ignore[arg-type]


def test_a_flow_to_a_service_frontend_names_the_service() -> None:
    md = h.metadata()
    service = SERVICE_IDENTITY_MIN + 7
    md.add_identity(
        service,
        (f"{SERVICE_IDENTITY_NAMESPACE_LABEL}=empire", f"{SERVICE_IDENTITY_NAME_LABEL}=deathstar"),
    )
    decoder = FlowDecoder(md, DecoderConfig(node_name="n1"))
    to_frontend = r.EVENT.unpack(
        h.event(h.XWING, "10.96.0.42", dst_identity=service, endpoint_id=h.XWING.endpoint_id,
              direction=2, trace_point=flow_pb2.FROM_ENDPOINT)
    )  # fmt: skip
    flow = decoder.decode(to_frontend, 1)
    assert (flow.destination_service.namespace, flow.destination_service.name) == (
        "empire",
        "deathstar",
    )
    # the streaming path (a shape's template) carries it too
    streamed = flow_pb2.Flow.FromString(decoder.encode(to_frontend, 2)[0])
    assert streamed.destination_service == flow.destination_service
    # a pod destination names no service
    to_pod = decoder.decode(r.EVENT.unpack(h.event(h.XWING, h.DEATHSTAR)), 3)
    assert not to_pod.HasField("destination_service")
