"""Hubble's L7 DNS flows from the DNS proxy's observations.

As Cilium's DNS proxy reports them: a request flow (`l7.type` REQUEST: the query, its
types, `observation_source` "proxy") for every query, FORWARDED when the rules allow it
and DROPPED when they do not (the REFUSED answer the proxy gives a denied query is not
reported again), and a response flow (RESPONSE, a reply) for every answer passed on,
with the addresses, the lowest TTL, the CNAMEs, the rcode and the answer types. The
frame (time, endpoints from the node's metadata, event type 129) is the HTTP proxy's
(`l7flows.l7_flow`); the `Summary` is the line Hubble's parser writes, which `-o compact`
prints. `DnsFlowReporter` is the proxy's `observe` hook: flow into the node's ring
(`L7FlowPublisher.publish`) and Hubble's DNS metrics.
"""

from __future__ import annotations

from septum.agent.l7.dnsmetrics import RCODE_NAMES, DnsMetrics
from septum.agent.l7.dnsproxy import DnsEvent
from septum.agent.l7.l7flows import L7FlowPublisher, l7_flow
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.metadata import Metadata

OBSERVATION_SOURCE = "proxy"
# The node's metadata as the flows need it (for modules that must not import the datapath).
FlowMetadata = Metadata


def dns_summary(dns: flow_pb2.DNS, response: bool) -> str:
    """Hubble's summary of a DNS flow (Cilium's seven parser's wording)."""
    qtypes = ",".join(dns.qtypes)
    if not response:
        return f"DNS Query {dns.query} {qtypes}"
    if dns.rcode != 0:
        answer = f"RCode: {RCODE_NAMES.get(dns.rcode, str(dns.rcode))}"
    else:
        parts = []
        if dns.ips:
            parts.append('"' + ",".join(dns.ips) + '"')
        if dns.cnames:
            parts.append('CNAMEs: "' + ",".join(dns.cnames) + '"')
        answer = " ".join(parts)
    return f"DNS Answer {answer} TTL: {dns.ttl} (Proxy {dns.query} {qtypes})"


def dns_flow(
    event: DnsEvent, *, node_name: str = "", metadata: Metadata | None = None
) -> flow_pb2.Flow | None:
    """The flow of one observation, or None for the proxy's own REFUSED answer."""
    if event.is_response and not event.allowed:
        return None
    request = event.request
    source, destination = request.client, request.server
    if event.is_response:
        source, destination = destination, source
    flow = l7_flow(
        node_name=node_name,
        source=source,
        destination=destination,
        ingress=False,
        reply=event.is_response,
        forwarded=event.allowed,
        metadata=metadata,
        time_ns=int(event.timestamp_s * 1e9),
        udp=request.transport == "udp",
    )
    l7 = flow.l7
    l7.type = flow_pb2.RESPONSE if event.is_response else flow_pb2.REQUEST
    dns = l7.dns
    dns.query = event.query.name
    dns.qtypes.extend(event.query.qtypes)
    dns.observation_source = OBSERVATION_SOURCE
    if event.is_response:
        l7.latency_ns = int(event.latency_s * 1e9)
        dns.rcode = event.rcode
        answer = event.answer
        if answer is not None:
            dns.ips.extend(str(address) for address, _ in answer.addresses)
            dns.ttl = answer.lowest_ttl
            dns.cnames.extend(answer.cnames)
            dns.rrtypes.extend(answer.rrtypes)
    flow.Summary = dns_summary(dns, event.is_response)
    return flow


class DnsFlowReporter:
    """The DNS proxy's `observe` hook: each observation as a flow, and counted."""

    def __init__(
        self,
        publisher: L7FlowPublisher,
        metrics: DnsMetrics,
        *,
        node_name: str,
        metadata: Metadata | None = None,
    ) -> None:
        self._publisher = publisher
        self._metrics = metrics
        self._node_name = node_name
        self._metadata = metadata

    def __call__(self, event: DnsEvent) -> None:
        flow = dns_flow(event, node_name=self._node_name, metadata=self._metadata)
        if flow is None:
            return
        self._publisher.publish(flow)
        self._metrics.observe(flow)


__all__ = ["OBSERVATION_SOURCE", "DnsFlowReporter", "FlowMetadata", "dns_flow", "dns_summary"]
