"""Hubble FlowFilter semantics, each filter alone and combined, white- and blacklist."""

from __future__ import annotations

import observe_helpers as h
import pytest
from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.filters import FilterError, FlowSelection

DECODER = h.decoder()


def flow(*args: object, **kwargs: object) -> flow_pb2.Flow:
    return DECODER.decode(r.EVENT.unpack(h.event(*args, **kwargs)), 1)  # type: ignore[arg-type]


SYN_IN = flow()  # xwing -> deathstar:80 ingress, allowed, TCP SYN, IPv4
DROP = flow(h.XWING, h.DEATHSTAR, dst_port=8080, event_type=1, verdict=2, drop_reason=133)
REPLY = DECODER.decode(r.EVENT.unpack(h.reply_event()), 1)  # type: ignore[arg-type]
UDP6 = flow(h.TIEFIGHTER, h.DEATHSTAR, v6=True, protocol=17, dst_port=53, tcp_flags=0)
ICMP_WORLD = flow(
    "192.0.2.7",
    h.XWING,
    protocol=1,
    icmp_type=8,
    src_port=0,
    dst_port=0,
    tcp_flags=0,
    event_type=1,
    verdict=2,
    drop_reason=181,
    rule_id=2,
)
ALL = {"syn": SYN_IN, "drop": DROP, "reply": REPLY, "udp6": UDP6, "icmp": ICMP_WORLD}


def matching(
    white: list[dict[str, object]] | None = None, black: list[dict[str, object]] | None = None
) -> set[str]:
    selection = FlowSelection(
        [flow_pb2.FlowFilter(**f) for f in (white or [])],  # type: ignore[arg-type]
        [flow_pb2.FlowFilter(**f) for f in (black or [])],  # type: ignore[arg-type]
    )
    return {name for name, fl in ALL.items() if selection(fl)}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"source_ip": ["10.0.0.1"]}, {"syn", "drop"}),
        ({"source_ip": ["10.0.0.0/30"]}, {"syn", "drop", "reply"}),
        ({"destination_ip": ["fd00::2"]}, {"udp6"}),
        ({"source_pod": ["xwing"]}, {"syn", "drop"}),  # no namespace: "default"
        ({"source_pod": ["empire/"]}, {"reply", "udp6"}),
        ({"destination_pod": ["empire/deathstar"]}, {"syn", "drop", "udp6"}),
        ({"destination_pod": ["kube-system/"]}, set()),
        ({"source_label": ["k8s:app=xwing"]}, {"syn", "drop"}),
        ({"source_label": ["org=empire"]}, {"reply", "udp6"}),
        ({"source_label": ["org in (empire, alliance),app!=deathstar"]}, {"syn", "drop", "udp6"}),
        ({"source_label": ["reserved:world"]}, {"icmp"}),
        ({"destination_label": ["!app"]}, set()),
        ({"destination_workload": [flow_pb2.Workload(kind="Deployment")]}, {"syn", "drop", "udp6"}),
        ({"destination_workload": [flow_pb2.Workload(name="other")]}, set()),
        ({"verdict": [flow_pb2.DROPPED]}, {"drop", "icmp"}),
        ({"verdict": [flow_pb2.FORWARDED]}, {"syn", "reply", "udp6"}),
        ({"drop_reason_desc": [flow_pb2.POLICY_DENY]}, {"icmp"}),
        ({"event_type": [flow_pb2.EventTypeFilter(type=1)]}, {"drop", "icmp"}),
        (
            {"event_type": [flow_pb2.EventTypeFilter(type=4, match_sub_type=True, sub_type=5)]},
            {"reply"},
        ),
        (
            {"event_type": [flow_pb2.EventTypeFilter(type=4, match_sub_type=True, sub_type=0)]},
            set(),
        ),
        ({"protocol": ["tcp"]}, {"syn", "drop", "reply"}),
        ({"protocol": ["UDP"]}, {"udp6"}),
        ({"protocol": ["icmp"]}, {"icmp"}),
        ({"protocol": ["icmpv6"]}, set()),
        ({"destination_port": ["80"]}, {"syn"}),
        ({"destination_port": ["53", "8080"]}, {"udp6", "drop"}),
        ({"source_port": ["80"]}, {"reply"}),
        ({"traffic_direction": [flow_pb2.EGRESS]}, {"reply"}),
        ({"reply": [True]}, {"reply"}),
        ({"reply": [False]}, {"syn", "drop", "udp6", "icmp"}),
        ({"source_identity": [1003]}, {"udp6"}),
        ({"destination_identity": [1001]}, {"reply", "icmp"}),
        ({"tcp_flags": [flow_pb2.TCPFlags(SYN=True)]}, {"syn", "drop", "reply"}),
        ({"tcp_flags": [flow_pb2.TCPFlags(SYN=True, ACK=True)]}, {"reply"}),
        ({"node_name": [h.NODE]}, set(ALL)),
        ({"node_name": ["sfl-node-*"]}, set(ALL)),
        ({"node_name": ["other"]}, set()),
        ({"ip_version": [flow_pb2.IPv6]}, {"udp6"}),
        ({"uuid": [SYN_IN.uuid]}, set(ALL)),  # every test flow was decoded as sequence 1
        ({"http_status_code": ["4+"]}, set()),  # no L7 yet: nothing matches
        ({"http_method": ["GET"]}, set()),
        ({"http_path": ["^/v1/"]}, set()),
    ],
)
def test_each_filter_alone(filter_: dict[str, object], expected: set[str]) -> None:
    assert matching([filter_]) == expected


def test_fields_within_a_filter_are_anded() -> None:
    assert matching([{"source_pod": ["xwing"], "verdict": [flow_pb2.DROPPED]}]) == {"drop"}
    assert matching([{"protocol": ["tcp"], "destination_port": ["80"], "reply": [False]}]) == {
        "syn"
    }


def test_values_within_a_field_are_ored() -> None:
    assert matching([{"source_pod": ["xwing", "empire/tie"]}]) == {"syn", "drop", "udp6"}


def test_whitelist_filters_are_ored() -> None:
    assert matching([{"protocol": ["udp"]}, {"verdict": [flow_pb2.DROPPED]}]) == {
        "udp6",
        "drop",
        "icmp",
    }


def test_blacklist_excludes() -> None:
    assert matching(black=[{"verdict": [flow_pb2.DROPPED]}]) == {"syn", "reply", "udp6"}
    assert matching(black=[{"protocol": ["tcp"]}, {"ip_version": [flow_pb2.IPv6]}]) == {"icmp"}


def test_whitelist_and_blacklist_combined() -> None:
    white = [{"source_pod": ["xwing"]}, {"destination_pod": ["xwing"]}]
    black = [{"verdict": [flow_pb2.DROPPED]}]
    assert matching(white, black) == {"syn", "reply"}


def test_empty_selection_matches_everything() -> None:
    assert matching() == set(ALL)


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ({"source_fqdn": ["*.example.com"]}, "whitelist[0].source_fqdn"),
        ({"dns_query": ["x"]}, "whitelist[0].dns_query"),
        ({"source_ip": ["not-an-ip"]}, "whitelist[0].source_ip"),
        ({"destination_port": ["70000"]}, "whitelist[0].destination_port"),
        ({"protocol": ["gopher"]}, "whitelist[0].protocol"),
        ({"source_label": ["a=(b"]}, "whitelist[0].source_label"),
        ({"http_status_code": ["99"]}, "whitelist[0].http_status_code"),
        ({"source_pod": [""]}, "whitelist[0].source_pod"),
    ],
)
def test_unusable_filters_are_refused_by_name(filter_: dict[str, object], message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        FlowSelection([flow_pb2.FlowFilter(**filter_)])  # type: ignore[arg-type]
