"""Hubble FlowFilter semantics, each filter alone and combined, white- and blacklist."""

from __future__ import annotations

import re

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


def l7_flow(base: flow_pb2.Flow, **fields: object) -> flow_pb2.Flow:
    """A copy of a datapath flow with the L7/DNS/trace fields no datapath source fills yet."""
    out = flow_pb2.Flow()
    out.CopyFrom(base)
    out.MergeFrom(flow_pb2.Flow(**fields))  # type: ignore[arg-type]
    if out.Type == flow_pb2.L7:  # an access-log event, as Cilium's proxy reports it
        out.event_type.CopyFrom(flow_pb2.CiliumEventType(type=129))
    return out


# xwing asks the cluster DNS (the tiefighter's UDP6 flow stands in) for the deathstar.
DNS_QUERY = l7_flow(
    UDP6,
    Type=flow_pb2.L7,
    destination_names=["kube-dns.kube-system.svc.cluster.local"],
    l7=flow_pb2.Layer7(
        type=flow_pb2.REQUEST,
        dns=flow_pb2.DNS(query="deathstar.empire.svc.cluster.local.", qtypes=["A"]),
    ),
)
HTTP_POST = l7_flow(
    SYN_IN,
    Type=flow_pb2.L7,
    destination_names=["deathstar.empire.svc.cluster.local", "API.Deathstar.example"],
    l7=flow_pb2.Layer7(
        type=flow_pb2.REQUEST,
        http=flow_pb2.HTTP(
            method="POST",
            url="http://deathstar.empire.svc.cluster.local/v1/request-landing?ship=xwing",
            headers=[
                flow_pb2.HTTPHeader(key="X-Has-Force", value="true"),
                flow_pb2.HTTPHeader(key="Content-Type", value="application/json"),
            ],
        ),
    ),
    trace_context=flow_pb2.TraceContext(
        parent=flow_pb2.TraceParent(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    ),
)
HTTP_503 = l7_flow(
    REPLY,
    Type=flow_pb2.L7,
    source_names=["deathstar.empire.svc.cluster.local"],
    l7=flow_pb2.Layer7(
        type=flow_pb2.RESPONSE,
        http=flow_pb2.HTTP(
            code=503,
            url="http://deathstar.empire.svc.cluster.local/v1/exhaust-port",
            headers=[flow_pb2.HTTPHeader(key="Content-Type", value="text/plain")],
        ),
    ),
    trace_context=flow_pb2.TraceContext(parent=flow_pb2.TraceParent(trace_id="00f067aa0ba902b7")),
)
# The xwing leaving the cluster, SNATed by its node, with an IP trace option.
SNAT_OUT = l7_flow(
    flow(h.XWING, "203.0.113.10", dst_port=443),
    IP=flow_pb2.IP(source_xlated="198.51.100.7"),
    destination_names=["www.example.com", "example.com"],
    ip_trace_id=flow_pb2.IPTraceID(trace_id=42, ip_option_type=136),
)
L7 = {"dns": DNS_QUERY, "post": HTTP_POST, "503": HTTP_503, "snat": SNAT_OUT}
EVERY = {**ALL, **L7}


def matching(
    white: list[dict[str, object]] | None = None,
    black: list[dict[str, object]] | None = None,
    flows: dict[str, flow_pb2.Flow] = ALL,
) -> set[str]:
    selection = FlowSelection(
        [flow_pb2.FlowFilter(**f) for f in (white or [])],  # type: ignore[arg-type]
        [flow_pb2.FlowFilter(**f) for f in (black or [])],  # type: ignore[arg-type]
    )
    return {name for name, fl in flows.items() if selection(fl)}


def matching_every(
    white: list[dict[str, object]] | None = None, black: list[dict[str, object]] | None = None
) -> set[str]:
    """Like `matching`, over the datapath flows and the L7 ones built above."""
    return matching(white, black, EVERY)


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


def header(key: str, value: str) -> flow_pb2.HTTPHeader:
    return flow_pb2.HTTPHeader(key=key, value=value)


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        # FQDN patterns: "*" spans labels, case and one trailing dot are ignored
        ({"destination_fqdn": ["*.cluster.local"]}, {"dns", "post"}),
        ({"destination_fqdn": ["deathstar.empire.svc.cluster.local."]}, {"post"}),
        ({"destination_fqdn": ["API.DEATHSTAR.EXAMPLE"]}, set()),  # names compare as sent
        ({"destination_fqdn": ["example.com"]}, {"snat"}),
        ({"destination_fqdn": ["*example.com"]}, {"snat"}),
        ({"destination_fqdn": ["*.example.com"]}, {"snat"}),  # www.example.com
        ({"destination_fqdn": ["ww*.example.com", "kube-dns.*"]}, {"snat", "dns"}),
        ({"destination_fqdn": ["example"]}, set()),  # whole name only
        ({"source_fqdn": ["deathstar.*"]}, {"503"}),
        ({"source_fqdn": ["*"]}, {"503"}),  # only flows that carry names
        # DNS query: a regular expression found anywhere in the query
        ({"dns_query": ["deathstar"]}, {"dns"}),
        ({"dns_query": [r"^deathstar\.empire\.", "^nothing$"]}, {"dns"}),
        ({"dns_query": ["^empire"]}, set()),
        ({"dns_query": [""]}, {"dns"}),  # any DNS record, and nothing else
        # HTTP URL: a regular expression over the whole URL, query included
        ({"http_url": ["/v1/"]}, {"post", "503"}),
        ({"http_url": [r"ship=xwing$"]}, {"post"}),
        ({"http_url": ["^https://"]}, set()),
        # HTTP headers: exact key and value
        ({"http_header": [header("X-Has-Force", "true")]}, {"post"}),
        ({"http_header": [header("Content-Type", "text/plain")]}, {"503"}),
        (
            {"http_header": [header("Content-Type", "text/plain"), header("X-Has-Force", "true")]},
            {"post", "503"},
        ),
        ({"http_header": [header("x-has-force", "true")]}, set()),
        ({"http_header": [header("X-Has-Force", "")]}, set()),
        # the existing HTTP fields now see L7 flows too
        ({"http_status_code": ["5+"]}, {"503"}),
        ({"http_status_code": ["503"]}, {"503"}),
        ({"http_method": ["post"]}, {"post"}),
        ({"http_path": ["^/v1/request-"]}, {"post"}),
        ({"protocol": ["dns"]}, {"dns"}),
        ({"protocol": ["http"]}, {"post", "503"}),
        # SNAT source
        ({"source_ip_xlated": ["198.51.100.7"]}, {"snat"}),
        ({"source_ip_xlated": ["198.51.100.0/24"]}, {"snat"}),
        ({"source_ip_xlated": ["10.0.0.1"]}, set()),  # the pre-SNAT source is not it
        # trace ids
        ({"trace_id": ["4bf92f3577b34da6a3ce929d0e0e4736"]}, {"post"}),
        ({"trace_id": ["00f067aa0ba902b7", "4bf92f3577b34da6a3ce929d0e0e4736"]}, {"post", "503"}),
        ({"trace_id": ["4BF92F3577B34DA6A3CE929D0E0E4736"]}, set()),
        ({"ip_trace_id": [42]}, {"snat"}),
        ({"ip_trace_id": [41, 43]}, set()),
    ],
)
def test_each_new_filter_alone(filter_: dict[str, object], expected: set[str]) -> None:
    assert matching_every([filter_]) == expected


def test_new_filters_combined_within_a_filter() -> None:
    both = {"destination_fqdn": ["*.cluster.local"], "http_method": ["POST"]}
    assert matching_every([both]) == {"post"}
    url_and_trace = {"http_url": ["/v1/"], "trace_id": ["00f067aa0ba902b7"]}
    assert matching_every([url_and_trace]) == {"503"}
    assert matching_every([{"dns_query": ["deathstar"], "source_pod": ["xwing"]}]) == set()
    assert matching_every([{"source_ip_xlated": ["198.51.100.7"], "ip_trace_id": [42]}]) == {"snat"}


def test_new_filters_ored_across_whitelist_filters() -> None:
    white = [{"dns_query": ["."]}, {"http_header": [header("X-Has-Force", "true")]}]
    assert matching_every(white) == {"dns", "post"}


def test_new_filters_in_the_blacklist() -> None:
    assert matching_every(black=[{"destination_fqdn": ["*.cluster.local"]}]) == set(EVERY) - {
        "dns",
        "post",
    }
    assert matching_every(black=[{"http_url": ["/v1/"]}, {"ip_trace_id": [42]}]) == set(ALL) | {
        "dns"
    }


def test_new_filters_whitelist_and_blacklist_combined() -> None:
    white = [{"protocol": ["http"]}, {"destination_fqdn": ["*example.com"]}]
    black = [{"trace_id": ["00f067aa0ba902b7"]}, {"source_ip_xlated": ["198.51.100.0/24"]}]
    assert matching_every(white, black) == {"post"}


def cel(*expressions: str) -> dict[str, object]:
    return {"experimental": flow_pb2.FlowFilter.Experimental(cel_expression=list(expressions))}


@pytest.mark.parametrize(
    ("expressions", "expected"),
    [
        # Hubble's own examples: enums by name in the `flow` container, uint ports
        (["_flow.verdict == Verdict.DROPPED"], {"drop", "icmp"}),
        (["_flow.verdict == flow.Verdict.DROPPED && _flow.drop_reason_desc == 181"], {"icmp"}),
        (["has(_flow.l4.UDP)"], {"udp6", "dns"}),
        (["has(_flow.l4.TCP) && _flow.l4.TCP.destination_port == uint(8080)"], {"drop"}),
        (
            ["_flow.IP.source == '10.0.0.2' || _flow.IP.destination == 'fd00::2'"],
            {"reply", "udp6", "dns", "503"},
        ),
        # presence, not "the key exists": unset messages read as defaults
        (["has(_flow.l7)"], set(L7) - {"snat"}),
        (["!has(_flow.l7.http) && _flow.l7.http.code == 0u"], set(EVERY) - {"post", "503"}),
        (["has(_flow.IP.source_xlated)"], {"snat"}),
        (["_flow.is_reply == true"], {"reply", "503"}),
        # strings, lists, macros, timestamps
        (["_flow.destination_names.exists(n, n.endsWith('.example.com'))"], {"snat"}),
        (["'k8s:app=xwing' in _flow.source.labels"], {"syn", "drop", "post", "snat"}),
        (["_flow.l7.dns.query.matches('^deathstar[.]')"], {"dns"}),
        (["_flow.l7.http.headers.exists(h, h.key == 'X-Has-Force')"], {"post"}),
        (["_flow.time > timestamp('2000-01-01T00:00:00Z')"], set(EVERY)),
        (["_flow.ip_trace_id.trace_id == uint(42)"], {"snat"}),
        # several expressions: any one true
        (["_flow.l4.ICMPv4.type == uint(8)", "has(_flow.trace_context)"], {"icmp", "post", "503"}),
        # an error at run time (index past the end) is no match, as in Hubble
        (["_flow.destination_names[1] == 'example.com'"], {"snat"}),
    ],
)
def test_cel_expressions(expressions: list[str], expected: set[str]) -> None:
    assert matching_every([cel(*expressions)]) == expected


def test_cel_combined_with_other_fields_and_lists() -> None:
    drops = cel("_flow.verdict == Verdict.DROPPED")
    assert matching_every([{**drops, "protocol": ["tcp"]}]) == {"drop"}
    assert matching_every([drops, {"dns_query": ["."]}]) == {"drop", "icmp", "dns"}
    assert matching_every(black=[drops, cel("has(_flow.l7)")]) == {"syn", "reply", "udp6", "snat"}
    assert matching_every([cel("has(_flow.l4.TCP)")], [drops]) == {
        "syn",
        "reply",
        "post",
        "503",
        "snat",
    }


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "syntax error"),
        ("_flow.verdict ==", "syntax error"),
        ("something-invalid", "undeclared reference to 'something'"),
        ("_flow", "got map, wanted bool result type"),
        ("_flow.verdict", "got int, wanted bool result type"),
        ("_flow.no_such_field == 1", "no such member.*'no_such_field'"),
        ("_flow.l4.TCP.destination_port == 80", "no matching overload.*uint, int"),
        ("no_such_function(_flow)", "undeclared reference to 'no_such_function'"),
    ],
)
def test_bad_cel_expressions_are_refused_by_name(expression: str, reason: str) -> None:
    with pytest.raises(FilterError) as err:
        FlowSelection([flow_pb2.FlowFilter(), flow_pb2.FlowFilter(**cel("true", expression))])  # type: ignore[arg-type]
    assert str(err.value).startswith("whitelist[1].experimental.cel_expression[1]: invalid CEL")
    assert re.search(reason, str(err.value)), str(err.value)


def test_http_fields_need_an_event_type_that_admits_l7() -> None:
    l7_type = flow_pb2.EventTypeFilter(type=129)
    allowed = {"http_url": ["/v1/"], "event_type": [l7_type, flow_pb2.EventTypeFilter(type=4)]}
    assert matching_every([allowed]) == {"post", "503"}
    with pytest.raises(FilterError, match=r"blacklist\[0\]\.http_header: .*event_type"):
        FlowSelection(
            [],
            [
                flow_pb2.FlowFilter(
                    http_header=[header("a", "b")],
                    event_type=[flow_pb2.EventTypeFilter(type=4)],
                )
            ],
        )


@pytest.mark.parametrize(
    ("filter_", "message"),
    [
        ({"source_fqdn": ["*.example.com", ""]}, "whitelist[0].source_fqdn: .*empty pattern"),
        ({"destination_fqdn": ["a b.example"]}, "whitelist[0].destination_fqdn: .*' '"),
        ({"destination_fqdn": ["example.com.."]}, "whitelist[0].destination_fqdn: .*trailing dots"),
        ({"destination_fqdn": ["ex?mple.com"]}, "whitelist[0].destination_fqdn: .*'\\?'"),
        ({"dns_query": ["(unclosed"]}, "whitelist[0].dns_query: invalid regular expression"),
        ({"http_url": ["[z-a]"]}, "whitelist[0].http_url: invalid regular expression"),
        ({"source_ip_xlated": ["198.51.100.7/33"]}, "whitelist[0].source_ip_xlated"),
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
