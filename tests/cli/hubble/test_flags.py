"""`septum observe` flags -> the GetFlowsRequest `hubble observe` would send."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from septum.cli.hubble.errors import FlagError
from septum.cli.hubble.flags import build_request, parse_time
from septum.dataplane.observe.api.flow import flow_pb2


def test_default_is_last_20() -> None:
    request = build_request([])
    assert request.number == 20 and not request.follow and not request.whitelist


def test_follow_has_no_default_number() -> None:
    assert build_request([], follow=True).number == 0


def test_first_and_last() -> None:
    assert build_request([], first=5).first and build_request([], first=5).number == 5
    assert build_request([], last=7).number == 7 and not build_request([], last=7).first


def test_pod_makes_a_source_and_a_destination_filter() -> None:
    request = build_request([("pod", "xwing")])
    assert [list(f.source_pod) for f in request.whitelist] == [["xwing"], []]
    assert [list(f.destination_pod) for f in request.whitelist] == [[], ["xwing"]]


def test_namespace_scopes_each_side() -> None:
    request = build_request([("namespace", "empire")])
    assert [list(f.source_pod) for f in request.whitelist] == [["empire/"], []]
    assert [list(f.destination_pod) for f in request.whitelist] == [[], ["empire/"]]


def test_directional_flags_go_into_both_filters() -> None:
    request = build_request(
        [("from-pod", "default/xwing"), ("to-port", "80"), ("verdict", "DROPPED")]
    )
    assert len(request.whitelist) == 1  # both sides equal: Hubble sends one
    only = request.whitelist[0]
    assert list(only.source_pod) == ["default/xwing"]
    assert list(only.destination_port) == ["80"]
    assert list(only.verdict) == [flow_pb2.DROPPED]


def test_not_negates_only_the_next_flag() -> None:
    request = build_request([("protocol", "tcp"), ("not", None), ("verdict", "DROPPED")])
    assert [list(f.protocol) for f in request.whitelist] == [["tcp"]]
    assert [list(f.verdict) for f in request.blacklist] == [[flow_pb2.DROPPED]]
    assert not request.whitelist[0].verdict


def test_type_names_and_subtypes() -> None:
    request = build_request([("type", "trace:to-endpoint"), ("type", "drop")])
    types = request.whitelist[0].event_type
    assert (types[0].type, types[0].match_sub_type, types[0].sub_type) == (4, True, 0)
    assert (types[1].type, types[1].match_sub_type) == (1, False)


def test_labels_ips_identities_direction_node() -> None:
    request = build_request(
        [
            ("from-label", "app=xwing"),
            ("to-ip", "10.0.0.0/24"),
            ("to-identity", "world"),
            ("traffic-direction", "ingress"),
            ("node-name", "node-*"),
            ("tcp-flags", "syn,ack"),
            ("http-status", "5+"),
            ("http-method", "GET"),
            ("http-path", "/v1/"),
        ]
    )
    f = request.whitelist[0]
    assert list(f.source_label) == ["app=xwing"] and list(f.destination_ip) == ["10.0.0.0/24"]
    assert list(f.destination_identity) == [2] and list(f.traffic_direction) == [flow_pb2.INGRESS]
    assert list(f.node_name) == ["node-*"] and f.tcp_flags[0].SYN and f.tcp_flags[0].ACK
    assert list(f.http_status_code) == ["5+"] and list(f.http_method) == ["GET"]
    assert list(f.http_path) == ["/v1/"]


def test_fqdn_makes_a_source_and_a_destination_filter() -> None:
    request = build_request([("fqdn", "*.cilium.io")])
    assert [list(f.source_fqdn) for f in request.whitelist] == [["*.cilium.io"], []]
    assert [list(f.destination_fqdn) for f in request.whitelist] == [[], ["*.cilium.io"]]


def test_l7_trace_and_snat_flags_go_into_both_filters() -> None:
    request = build_request(
        [
            ("from-fqdn", "api.example.com"),
            ("to-fqdn", "*.example.com"),
            ("snat-ip", "198.51.100.0/24"),
            ("http-url", "^https?://"),
            ("http-header", "X-Request-Id:a:b"),  # the value keeps its own colons
            ("http-header", "Accept:"),
            ("trace-id", "4bf92f3577b34da6"),
            ("ip-trace-id", "42"),
            ("cel-expression", "_flow.verdict == Verdict.DROPPED"),
        ]
    )
    (f,) = request.whitelist
    assert list(f.source_fqdn) == ["api.example.com"]
    assert list(f.destination_fqdn) == ["*.example.com"]
    assert list(f.source_ip_xlated) == ["198.51.100.0/24"]
    assert list(f.http_url) == ["^https?://"]
    assert [(h.key, h.value) for h in f.http_header] == [("X-Request-Id", "a:b"), ("Accept", "")]
    assert list(f.trace_id) == ["4bf92f3577b34da6"] and list(f.ip_trace_id) == [42]
    assert list(f.experimental.cel_expression) == ["_flow.verdict == Verdict.DROPPED"]


def test_not_composes_with_the_new_flags() -> None:
    request = build_request(
        [("to-fqdn", "*.example.com"), ("not", None), ("http-header", "X-Debug:1")]
    )
    assert [list(f.destination_fqdn) for f in request.whitelist] == [["*.example.com"]]
    assert not request.whitelist[0].http_header
    assert [[(h.key, h.value) for h in f.http_header] for f in request.blacklist] == [
        [("X-Debug", "1")]
    ]
    request = build_request([("not", None), ("fqdn", "*.example.com")])
    assert not request.whitelist
    assert [list(f.source_fqdn) for f in request.blacklist] == [["*.example.com"], []]
    assert [list(f.destination_fqdn) for f in request.blacklist] == [[], ["*.example.com"]]


@pytest.mark.parametrize(
    ("flags", "kwargs", "message"),
    [
        ([("pod", "a"), ("from-pod", "b")], {}, "--pod and --from-pod|--from-pod and --pod"),
        ([("ip", "10.0.0.1"), ("to-ip", "10.0.0.2")], {}, "--to-ip and --ip|--ip and --to-ip"),
        ([("port", "80"), ("to-port", "81")], {}, "--port and --to-port"),
        ([("label", "a"), ("from-label", "b")], {}, "--label and --from-label"),
        ([("verdict", "MAYBE")], {}, "--verdict"),
        ([("to-port", "99999")], {}, "--to-port"),
        ([("type", "bogus")], {}, "--type"),
        ([("traffic-direction", "sideways")], {}, "--traffic-direction"),
        ([("to-identity", "nobody")], {}, "--to-identity"),
        ([("tcp-flags", "SYN,BOGUS")], {}, "--tcp-flags"),
        ([("fqdn", "a.example"), ("from-fqdn", "b.example")], {}, "--from-fqdn and --fqdn"),
        ([("to-fqdn", "a.example"), ("to-ip", "10.0.0.1")], {}, "--to-fqdn and --to-ip"),
        ([("from-fqdn", "a.example"), ("namespace", "x")], {}, "--from-fqdn and --namespace"),
        ([("fqdn", "a.example"), ("to-pod", "x")], {}, "--fqdn and --to-pod"),
        ([("http-header", "no-colon")], {}, "--http-header"),
        ([("ip-trace-id", "0")], {}, "--ip-trace-id"),
        ([("ip-trace-id", "-1")], {}, "--ip-trace-id"),
        ([("ip-trace-id", str(2**64))], {}, "--ip-trace-id"),
        ([("not", None)], {}, "--not"),
        ([("not", None), ("not", None), ("pod", "a")], {}, "--not"),
        ([], {"last": 1, "first": 2}, "--last and --first"),
        ([], {"first": 2, "follow": True}, "--first and --follow"),
        ([], {"until": "1m", "follow": True}, "--until and --follow"),
        ([], {"since": "yesterday"}, "--since"),
        ([], {"since": "1m", "until": "5m"}, "--since and --until"),
    ],
)
def test_bad_flags_are_named(
    flags: list[tuple[str, str | None]], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(FlagError, match=message):
        build_request(flags, **kwargs)  # type: ignore[arg-type]


def test_times_are_rfc3339_or_durations_ago() -> None:
    now = datetime(2026, 1, 2, 15, 4, 5, tzinfo=UTC)
    assert parse_time("since", "1h30m", now) == datetime(2026, 1, 2, 13, 34, 5, tzinfo=UTC)
    assert parse_time("since", "2026-01-02T15:00:00Z", now) == datetime(
        2026, 1, 2, 15, 0, tzinfo=UTC
    )
    request = build_request([], since="2026-01-02T15:00:00Z", until="2026-01-02T15:01:00Z")
    assert request.until.ToSeconds() - request.since.ToSeconds() == 60
    assert request.number == 0  # a time window means "all flows in it"


def test_dns_query_goes_into_both_filters() -> None:
    request = build_request(
        [("dns-query", r"\.example\.com\.$"), ("not", None), ("dns-query", "x")]
    )
    (f,) = request.whitelist
    assert list(f.dns_query) == [r"\.example\.com\.$"]
    assert [list(b.dns_query) for b in request.blacklist] == [["x"]]
