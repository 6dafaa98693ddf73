"""FlowDecoder.encode: the streaming path's bytes parse to exactly the decoded Flow."""

from __future__ import annotations

import itertools
from typing import Any

import observe_helpers as h

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.metadata import EndpointInfo
from septum.dataplane.observe.wire import decode_response, encode_flow_bytes_response

SIDES: list[tuple[EndpointInfo | str, EndpointInfo | str]] = [
    (h.XWING, h.DEATHSTAR),
    (h.DEATHSTAR, h.XWING),
    ("192.0.2.7", h.TIEFIGHTER),
    (h.TIEFIGHTER, "203.0.113.9"),
]
VARIANTS: list[dict[str, Any]] = [
    {},
    {"tcp_flags": 0x12, "is_reply": 1, "src_port": 80, "dst_port": 40000},
    {"tcp_flags": 0x11, "trace_point": 3, "event_type": 4, "direction": 2},
    {"protocol": 17, "tcp_flags": 0, "src_port": 5353, "dst_port": 53},
    {"protocol": 132, "tcp_flags": 0, "src_port": 0, "dst_port": 9},
    {"protocol": 1, "tcp_flags": 0, "src_port": 0, "dst_port": 0, "icmp_type": 8},
    {"protocol": 1, "tcp_flags": 0, "src_port": 0, "dst_port": 0, "icmp_type": 3, "icmp_code": 3},
    {"verdict": 2, "drop_reason": 133, "event_type": 1, "rule_id": 2},
    {"verdict": 4, "drop_reason": 133, "rule_id": 2},
    {"verdict": 1, "rule_id": 1, "ifindex": 7, "l7_proxy_port": 15001},
    {"src_port": 0, "dst_port": 0},
    {"time_ns": 0},
    {"src_mac": bytes.fromhex("aabbccddeeff"), "dst_mac": bytes.fromhex("010203040506")},
    {"src_mac": bytes(6), "dst_mac": bytes(6)},
]


def test_encode_equals_decode_for_every_shape() -> None:
    dec = h.decoder()
    for (src, dst), variant, v6 in itertools.product(SIDES, VARIANTS, (False, True)):
        if v6 and variant.get("protocol") == 1:
            variant = {**variant, "protocol": 58, "icmp_type": 128}
        rec = r.EVENT.unpack(h.event(src, dst, v6=v6, **variant))
        for seq in (0, 7, 1 << 40):
            flow_bytes, time_bytes = dec.encode(rec, seq)
            expected = dec.decode(rec, seq)
            assert flow_pb2.Flow.FromString(flow_bytes) == expected, (src, dst, variant, v6)
            assert time_bytes == expected.time.SerializeToString()


def test_templates_are_shared_by_flows_that_differ_in_time_and_ports() -> None:
    dec = h.decoder()
    for port in range(100):
        rec = r.EVENT.unpack(h.event(src_port=30000 + port, time_ns=h.boot_ns() + port))
        flow_bytes, _ = dec.encode(rec, port)
        assert flow_pb2.Flow.FromString(flow_bytes) == dec.decode(rec, port)
    assert len(dec._templates) == 1


def test_records_differing_only_in_mac_get_their_own_template() -> None:
    dec = h.decoder()
    macs = [(h.SRC_MAC, h.DST_MAC), (bytes.fromhex("0a0000000099"), h.DST_MAC)]
    macs.append((h.SRC_MAC, bytes.fromhex("0a00000000aa")))
    encoded = []
    for src_mac, dst_mac in macs:
        rec = r.EVENT.unpack(h.event(src_mac=src_mac, dst_mac=dst_mac))
        flow_bytes, _ = dec.encode(rec, 5)
        flow = flow_pb2.Flow.FromString(flow_bytes)
        assert flow == dec.decode(rec, 5)
        assert (flow.ethernet.source, flow.ethernet.destination) == (
            src_mac.hex(":"),
            dst_mac.hex(":"),
        )
        encoded.append(flow_bytes)
    assert len(set(encoded)) == 3
    assert len(dec._templates) == 3


def test_response_carries_flow_node_and_time() -> None:
    dec = h.decoder()
    rec = r.EVENT.unpack(h.event())
    flow_bytes, time_bytes = dec.encode(rec, 3)
    response = decode_response(encode_flow_bytes_response(flow_bytes, time_bytes, h.NODE))
    assert response.flow == dec.decode(rec, 3)
    assert response.node_name == h.NODE
    assert response.time == response.flow.time


def test_a_metadata_change_rebuilds_the_templates() -> None:
    md = h.metadata()
    from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder

    dec = FlowDecoder(md, DecoderConfig(node_name=h.NODE))
    rec = r.EVENT.unpack(h.event())
    before = flow_pb2.Flow.FromString(dec.encode(rec, 1)[0])
    md.add_endpoint(
        EndpointInfo(
            h.DEATHSTAR.endpoint_id,
            h.DEATHSTAR.identity,
            "empire",
            "deathstar-renamed",
            h.DEATHSTAR.labels,
            ips=h.DEATHSTAR.ips,
        )
    )
    after = flow_pb2.Flow.FromString(dec.encode(rec, 1)[0])
    assert before.destination.pod_name == h.DEATHSTAR.pod_name
    assert after.destination.pod_name == "deathstar-renamed"
    assert after == dec.decode(rec, 1)


def test_varints_are_protobufs_own_at_every_size_boundary() -> None:
    from google.protobuf.internal.encoder import _VarintBytes  # the reference encoder

    from septum.dataplane.observe.wire import varint

    values = {0, 1, 2**64 - 1}
    for bits in range(1, 64):
        values |= {2**bits - 1, 2**bits, 2**bits + 1}
    for value in sorted(values):
        assert varint(value) == _VarintBytes(value), value
