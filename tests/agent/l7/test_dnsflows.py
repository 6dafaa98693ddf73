"""DNS flows and metrics as Hubble has them, from the proxy's observations; the Observer's
own filters (`--dns-query`, `--type l7`) select them."""

from __future__ import annotations

import ipaddress

import dns.message
import dns.rcode
import dns.rrset
from prometheus_client import CollectorRegistry, generate_latest

from septum.agent.l7.dnsanswers import answer_facts, query_facts
from septum.agent.l7.dnsflows import DnsFlowReporter, dns_flow, dns_summary
from septum.agent.l7.dnsmetrics import DnsMetrics
from septum.agent.l7.dnsproxy import DnsEvent, DnsRequest
from septum.agent.l7.fqdncache import FqdnCache
from septum.agent.l7.l7flows import L7FlowPublisher
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.filters import compile_filter
from septum.dataplane.observe.metadata import EndpointInfo, StaticMetadata

REQUEST = DnsRequest(("10.0.0.5", 40000), ("192.0.2.53", 53), "udp")


def _events() -> list[DnsEvent]:
    query = dns.message.make_query("www.Example.com", "A")
    reply = dns.message.make_response(query)
    reply.answer.append(
        dns.rrset.from_text("www.example.com.", 20, "IN", "CNAME", "edge.example.net.")
    )
    reply.answer.append(dns.rrset.from_text("edge.example.net.", 60, "IN", "A", "203.0.113.12"))
    denied = dns.message.make_query("evil.example.org", "AAAA")
    return [
        DnsEvent(REQUEST, query_facts(query), True, False, timestamp_s=100.0),
        DnsEvent(
            REQUEST,
            query_facts(query),
            True,
            True,
            answer=answer_facts(reply),
            rcode=0,
            latency_s=0.002,
            timestamp_s=100.002,
        ),
        DnsEvent(REQUEST, query_facts(denied), False, False, timestamp_s=101.0),
        DnsEvent(
            REQUEST, query_facts(denied), False, True, rcode=dns.rcode.REFUSED, timestamp_s=101.0
        ),
    ]


METADATA = StaticMetadata()
METADATA.add_endpoint(EndpointInfo(7, 4242, "app", "client", ips=("10.0.0.5",)))


def _flows() -> list[flow_pb2.Flow]:
    flows = [dns_flow(e, node_name="n1", metadata=METADATA) for e in _events()]
    return [f for f in flows if f is not None]


def test_request_response_and_denied_flows() -> None:
    request, response, denied = _flows()  # the proxy's own REFUSED answer is not a flow
    assert request.Type == flow_pb2.L7 and request.event_type.type == 129
    assert request.verdict == flow_pb2.FORWARDED and not request.is_reply.value
    assert (request.IP.source, request.l4.UDP.destination_port) == ("10.0.0.5", 53)
    assert (request.source.identity, request.source.pod_name) == (4242, "client")
    assert request.Summary == "DNS Query www.example.com. A"
    assert request.l7.type == flow_pb2.REQUEST
    assert request.l7.dns.query == "www.example.com."
    assert list(request.l7.dns.qtypes) == ["A"]
    assert request.l7.dns.observation_source == "proxy"
    assert response.is_reply.value and response.l7.type == flow_pb2.RESPONSE
    assert (response.IP.source, response.IP.destination) == ("192.0.2.53", "10.0.0.5")
    assert response.destination.pod_name == "client" and response.l4.UDP.source_port == 53
    assert response.Summary == (
        'DNS Answer "203.0.113.12" CNAMEs: "edge.example.net." TTL: 20 (Proxy www.example.com. A)'
    )
    dns_record = response.l7.dns
    assert list(dns_record.ips) == ["203.0.113.12"]
    assert dns_record.ttl == 20  # the chain's lowest
    assert list(dns_record.cnames) == ["edge.example.net."]
    assert list(dns_record.rrtypes) == ["CNAME", "A"]
    assert dns_record.rcode == 0 and response.l7.latency_ns == 2_000_000
    assert denied.verdict == flow_pb2.DROPPED and denied.l7.dns.query == "evil.example.org."
    assert request.time.ToNanoseconds() == 100_000_000_000


def test_observer_filters_select_dns_flows() -> None:
    flows = _flows()
    by_query = compile_filter(flow_pb2.FlowFilter(dns_query=[r"example\.com"]))
    assert [f.l7.dns.query for f in flows if by_query(f)] == ["www.example.com."] * 2
    l7_type = flow_pb2.FlowFilter(event_type=[flow_pb2.EventTypeFilter(type=129)])
    assert all(compile_filter(l7_type)(f) for f in flows)
    dropped = compile_filter(flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED]))
    assert [f.l7.dns.query for f in flows if dropped(f)] == ["evil.example.org."]


def test_metrics_with_hubbles_names_and_labels() -> None:
    metrics = DnsMetrics()
    for flow in _flows():
        metrics.observe(flow)
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert 'hubble_dns_queries_total{ips_returned="0",qtypes="A",rcode=""} 1.0' in text
    assert (
        'hubble_dns_queries_total{ips_returned="0",qtypes="AAAA",rcode="Policy denied"} 1.0' in text
    )
    assert 'hubble_dns_responses_total{ips_returned="1",qtypes="A",rcode="No Error"} 1.0' in text
    assert 'hubble_dns_response_types_total{qtypes="A",type="CNAME"} 1.0' in text
    ignoring = DnsMetrics(ignore_aaaa=True)
    for flow in _flows():
        ignoring.observe(flow)
    assert all("AAAA" not in str(m.samples) for m in ignoring.collect())


def test_learned_names_label_flows_for_the_fqdn_filter() -> None:
    cache = FqdnCache()
    address = ipaddress.ip_address("203.0.113.10")
    cache.learn("app/client", "API.example.com.", [(address, 30)], now=0.0)
    cache.learn("app/client", "alias.example.net", [(address, 30)], now=0.0)
    assert cache.names_of("app/client", address) == ["alias.example.net", "api.example.com"]
    assert cache.names_of("app/other", address) == []  # Hubble's names are per endpoint
    flow = flow_pb2.Flow(destination_names=cache.names_of("app/client", address))
    assert compile_filter(flow_pb2.FlowFilter(destination_fqdn=["*.example.com"]))(flow)
    assert not compile_filter(flow_pb2.FlowFilter(destination_fqdn=["*.example.org"]))(flow)


class Ring:
    """The node ring's one method the publisher uses (FlowSink)."""

    def __init__(self) -> None:
        self.flows: list[flow_pb2.Flow] = []

    def append_flow(self, flow: flow_pb2.Flow) -> None:
        self.flows.append(flow)


def test_reporter_publishes_and_counts() -> None:
    ring, metrics = Ring(), DnsMetrics()
    reporter = DnsFlowReporter(
        L7FlowPublisher(ring, node_name="n1", registry=CollectorRegistry()),
        metrics,
        node_name="n1",
        metadata=METADATA,
    )
    for event in _events():
        reporter(event)
    assert [f.l7.type for f in ring.flows] == [
        flow_pb2.REQUEST,
        flow_pb2.RESPONSE,
        flow_pb2.REQUEST,
    ]
    # 2 queries (one denied), 1 response, 2 response types (CNAME, A)
    assert sum(s.value for m in metrics.collect() for s in m.samples) == 5


def test_summary_of_an_error_answer() -> None:
    dns_record = flow_pb2.DNS(query="x.example.com.", qtypes=["AAAA"], rcode=3)
    assert dns_summary(dns_record, True) == (
        "DNS Answer RCode: Non-Existent Domain TTL: 0 (Proxy x.example.com. AAAA)"
    )
