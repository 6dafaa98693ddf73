"""Hubble's L7 DNS flows from the DNS proxy's observations.

As Cilium's DNS proxy reports them: a request flow (`l7.type` REQUEST) for every query,
FORWARDED when the rules allow it and DROPPED when they do not (the REFUSED answer the
proxy gives a denied query is not reported again), and a response flow (RESPONSE, a
reply) for every answer passed on, with the query, the addresses, the lowest TTL, the
CNAMEs, the rcode, the question and answer types, and `observation_source` "proxy".
Endpoint details (pod names, labels) are the Observer's to fill in from its metadata,
as for every flow.
"""

from __future__ import annotations

import ipaddress

from septum.agent.l7.dnsproxy import DnsEvent
from septum.dataplane.observe.api.flow import flow_pb2

OBSERVATION_SOURCE = "proxy"
# Cilium's monitor message type of access-log (L7) records: Hubble's `--type l7`.
MESSAGE_TYPE_ACCESS_LOG = 129


def dns_flow(
    event: DnsEvent,
    *,
    node_name: str = "",
    source_identity: int = 0,
    server_identity: int = 0,
) -> flow_pb2.Flow | None:
    """The flow of one observation, or None for the proxy's own REFUSED answer."""
    if event.is_response and not event.allowed:
        return None
    request = event.request
    flow = flow_pb2.Flow()
    flow.time.FromNanoseconds(int(event.timestamp_s * 1e9))
    flow.verdict = flow_pb2.FORWARDED if event.allowed else flow_pb2.DROPPED
    flow.Type = flow_pb2.L7
    flow.node_name = node_name
    flow.event_type.type = MESSAGE_TYPE_ACCESS_LOG
    flow.traffic_direction = flow_pb2.EGRESS
    flow.is_reply.value = event.is_response
    client, server = request.client, request.server
    source, destination = (server, client) if event.is_response else (client, server)
    source_id, destination_id = (
        (server_identity, source_identity)
        if event.is_response
        else (source_identity, server_identity)
    )
    version = ipaddress.ip_address(client[0]).version
    flow.IP.source, flow.IP.destination = source[0], destination[0]
    flow.IP.ipVersion = flow_pb2.IPv4 if version == 4 else flow_pb2.IPv6
    l4 = flow.l4.UDP if request.transport == "udp" else flow.l4.TCP
    l4.source_port, l4.destination_port = source[1], destination[1]
    flow.source.identity, flow.destination.identity = source_id, destination_id
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
    return flow


__all__ = ["MESSAGE_TYPE_ACCESS_LOG", "OBSERVATION_SOURCE", "dns_flow"]
