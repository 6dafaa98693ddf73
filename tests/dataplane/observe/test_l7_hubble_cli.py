"""L7 HTTP flows (septum.agent.l7.l7flows) through the node Observer to the real hubble CLI:
--type l7, --http-status, --http-method, --http-path, --http-url and -o compact."""

from __future__ import annotations

from pathlib import Path

import observe_helpers as h
import pytest
from prometheus_client import CollectorRegistry

from septum.agent.l7.httpproxy import Connection, HttpRecord
from septum.agent.l7.l7flows import L7FlowPublisher, http_flows, l7_flow, redact_userinfo

CONN = Connection("10.0.0.3", 43000, "10.0.0.2", 80)  # tiefighter -> deathstar:80
URL = "http://deathstar.empire.svc.cluster.local"


def _records() -> list[HttpRecord]:
    headers = (("host", "deathstar.empire.svc.cluster.local"), ("user-agent", "curl/8"))
    return [
        HttpRecord(
            CONN, "POST", f"{URL}/v1/request-landing", "HTTP/1.1", headers, True, 200, 2_000_000, 0
        ),
        HttpRecord(CONN, "PUT", f"{URL}/v1/exhaust-port", "HTTP/1.1", headers, False, 403, 0, -1),
    ]


def test_flows_of_an_allowed_and_a_denied_request() -> None:
    allowed, denied = _records()
    request, response = http_flows(
        allowed, node_name="n", ingress=False, metadata=h.metadata(), now_ns=10_000_000_000
    )
    assert (request.Type, request.event_type.type, request.l7.type) == (2, 129, 1)
    assert (request.source.pod_name, request.destination.pod_name) == (
        "tiefighter",
        "deathstar-6fb5694d48-5hmds",
    )
    assert (response.IP.source, response.is_reply.value, response.l7.http.code) == (
        "10.0.0.2",
        True,
        200,
    )
    assert response.l7.latency_ns == 2_000_000
    assert request.time.ToNanoseconds() == 10_000_000_000 - 2_000_000
    (dropped,) = http_flows(denied, node_name="n", ingress=False, metadata=None)
    assert (dropped.verdict, dropped.l7.http.code, dropped.l7.http.method) == (2, 403, "PUT")
    assert redact_userinfo("http://u:p@h:8/x?q") == "http://h:8/x?q"
    dns = l7_flow(
        node_name="n", source=("10.0.0.3", 5353), destination=("10.96.0.10", 53), ingress=False,
        reply=False, forwarded=True, metadata=None, time_ns=1, udp=True,
    )  # fmt: skip
    assert (dns.l4.WhichOneof("protocol"), dns.l4.UDP.destination_port) == ("UDP", 53)


@pytest.mark.lab  # runs the Go-built hubble CLI
def test_hubble_cli_filters_and_prints_l7_http_flows(
    hubble: Path, observer: h.RunningObserver
) -> None:
    observer.push(h.event(src_port=41000, rule_id=1))  # an L3/L4 flow beside them
    registry = CollectorRegistry()
    publisher = L7FlowPublisher(
        observer.node.ring, node_name=h.NODE, metadata=h.metadata(), registry=registry
    )
    for record in _records():
        publisher.publish_http(record, ingress=False)

    l7 = h.hubble_json(hubble, observer, "--type", "l7")
    assert [(f["l7"]["type"], f["verdict"]) for f in l7] == [
        ("REQUEST", "FORWARDED"),
        ("RESPONSE", "FORWARDED"),
        ("REQUEST", "DROPPED"),
    ]
    assert l7[1]["l7"]["http"] == {
        "code": 200,
        "method": "POST",
        "url": f"{URL}/v1/request-landing",
        "protocol": "HTTP/1.1",
        "headers": [
            {"key": "host", "value": "deathstar.empire.svc.cluster.local"},
            {"key": "user-agent", "value": "curl/8"},
        ],
    }
    denied = h.hubble_json(hubble, observer, "--http-status", "403")
    assert [f["l7"]["http"]["url"] for f in denied] == [f"{URL}/v1/exhaust-port"]
    assert len(h.hubble_json(hubble, observer, "--http-method", "POST")) == 2
    assert len(h.hubble_json(hubble, observer, "--http-path", "/v1/exhaust-port")) == 1
    assert len(h.hubble_json(hubble, observer, "--http-url", f"{URL}/v1/request-landing")) == 2
    compact = h.hubble_observe(hubble, observer, "--type", "l7", "-o", "compact")
    assert f"HTTP/1.1 POST {URL}/v1/request-landing" in compact
    assert "http-request DROPPED" in compact
    assert (
        registry.get_sample_value(
            "hubble_http_requests_total",
            {"method": "PUT", "protocol": "HTTP/1.1", "status": "403", "reporter": "client"},
        )
        == 1
    )
