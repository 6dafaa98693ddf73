"""L7 DNS flows (septum.agent.l7.dnsflows) through the node Observer to the real hubble CLI:
--type l7, --protocol dns, the query through --cel-expression (hubble 1.20 has no --dns-query;
`septum observe --dns-query` sets FlowFilter.dns_query), -o compact, and Hubble's DNS metrics
beside them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import observe_helpers as h
import pytest
from prometheus_client import CollectorRegistry

from septum.agent.l7.dnsanswers import answer_facts, query_facts
from septum.agent.l7.dnsflows import DnsFlowReporter
from septum.agent.l7.dnsmetrics import DnsMetrics
from septum.agent.l7.dnsproxy import DnsEvent, DnsRequest
from septum.agent.l7.l7flows import L7FlowPublisher

SEPTUM = str(Path(sys.executable).with_name("septum"))
ASK = DnsRequest(("10.0.0.3", 41000), ("10.96.0.10", 53), "udp")  # tiefighter -> kube-dns


def _events() -> list[DnsEvent]:
    query = dns.message.make_query("api.example.com", "A")
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text("api.example.com.", 30, "IN", "A", "203.0.113.10"))
    denied = dns.message.make_query("evil.example.org", "A")
    return [
        DnsEvent(ASK, query_facts(query), True, False, timestamp_s=10.0),
        DnsEvent(ASK, query_facts(query), True, True, answer_facts(reply), 0, 0.001, 10.001),
        DnsEvent(ASK, query_facts(denied), False, False, timestamp_s=11.0),
        DnsEvent(ASK, query_facts(denied), False, True, rcode=dns.rcode.REFUSED, timestamp_s=11.0),
    ]


@pytest.mark.lab  # runs the Go-built hubble CLI
def test_hubble_cli_filters_and_prints_dns_flows(hubble: Path, observer: h.RunningObserver) -> None:
    observer.push(h.event(src_port=41001, rule_id=1))  # an L3/L4 flow beside them
    registry = CollectorRegistry()
    metrics = DnsMetrics()
    registry.register(metrics)
    publisher = L7FlowPublisher(
        observer.node.ring, node_name=h.NODE, metadata=h.metadata(), registry=registry
    )
    report = DnsFlowReporter(publisher, metrics, node_name=h.NODE, metadata=h.metadata())
    for event in _events():
        report(event)

    l7 = h.hubble_json(hubble, observer, "--type", "l7")
    assert [(f["l7"]["type"], f["verdict"]) for f in l7] == [
        ("REQUEST", "FORWARDED"),
        ("RESPONSE", "FORWARDED"),
        ("REQUEST", "DROPPED"),
    ]
    assert l7[0]["source"]["pod_name"] == "tiefighter"
    assert l7[1]["l7"]["dns"] == {
        "query": "api.example.com.",
        "ips": ["203.0.113.10"],
        "ttl": 30,
        "observation_source": "proxy",
        "qtypes": ["A"],
        "rrtypes": ["A"],
    }
    assert len(h.hubble_json(hubble, observer, "--protocol", "dns")) == 3
    # hubble 1.20's CLI has no --dns-query flag (FlowFilter.dns_query is the API's); the query
    # is selected through its CEL filter, which reads the same field.
    evil = h.hubble_json(
        hubble, observer, "--cel-expression", "_flow.l7.dns.query == 'evil.example.org.'"
    )
    assert [f["verdict"] for f in evil] == ["DROPPED"]
    # septum observe has the flag (FlowFilter.dns_query: a regular expression).
    done = subprocess.run(
        [SEPTUM, "observe", "--server", observer.target, "-o", "json", "--dns-query", "^evil"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    evil = [json.loads(line)["flow"] for line in done.stdout.splitlines() if line.strip()]
    assert [(f["l7"]["dns"]["query"], f["verdict"]) for f in evil] == [
        ("evil.example.org.", "DROPPED")
    ]
    compact = h.hubble_observe(hubble, observer, "--type", "l7", "-o", "compact")
    assert "DNS Query api.example.com. A" in compact
    assert 'DNS Answer "203.0.113.10" TTL: 30 (Proxy api.example.com. A)' in compact
    labels = {"rcode": "Policy denied", "qtypes": "A", "ips_returned": "0"}
    assert registry.get_sample_value("hubble_dns_queries_total", labels) == 1
