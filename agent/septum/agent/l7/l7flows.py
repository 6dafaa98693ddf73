"""L7 flows and metrics from the proxies' records, as Hubble shows Cilium's.

An allowed HTTP request gives two flows, the request (client -> server) and, when its
response leaves, the response (server -> client, ``is_reply``, the latency and status); a
denied one gives its request flow, verdict DROPPED, with the proxy's 403 as its status.
Every flow has ``Type: L7``, ``event_type.type`` 129 (Cilium's access-log message, what
``hubble observe --type l7`` selects), the ``Summary`` Hubble's parser writes (what
``-o compact`` prints), the ``l7`` record (method, URL, protocol, status,
headers) and the endpoints as the node's metadata knows them.  URLs lose their userinfo
(``user:password@``), as Hubble redacts it by default; header values are kept, as Hubble
keeps them unless told otherwise.

`L7FlowPublisher` is the one entry point for the proxies: HTTP records through
`publish_http`, and any other L7 flow built with `l7_flow` (the DNS proxy's) through
`publish`; it appends them to the node Observer's ring (`FlowRing.append_flow`) and counts
Hubble's ``hubble_http_requests_total{method,protocol,status,reporter}`` and
``hubble_http_request_duration_seconds{method,reporter}`` (reporter: ``client`` for an
egress proxy, ``server`` for an ingress one)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, Counter, Histogram

from septum.agent.l7.httpproxy import Connection, HttpRecord
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import add_policy
from septum.dataplane.observe.fqdnnames import cache_generation, fill_names
from septum.dataplane.observe.metadata import Metadata

ACCESS_LOG_EVENT = 129  # Cilium's MessageTypeAccessLog: Hubble's event type of L7 flows


class FlowSink(Protocol):
    def append_flow(self, flow: flow_pb2.Flow) -> None: ...


def redact_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _endpoint(endpoint: flow_pb2.Endpoint, ip: str, metadata: Metadata | None) -> None:
    info = metadata.endpoint_by_ip(ip) if metadata else None
    if info is None:
        return
    endpoint.ID = info.endpoint_id
    endpoint.identity = info.identity
    endpoint.namespace = info.namespace
    endpoint.pod_name = info.pod_name
    endpoint.labels.extend(info.labels)
    if info.cluster_name:
        endpoint.cluster_name = info.cluster_name
    for workload in info.workloads:
        endpoint.workloads.add(name=workload.name, kind=workload.kind)


def l7_flow(
    *,
    node_name: str,
    source: tuple[str, int],
    destination: tuple[str, int],
    ingress: bool,
    reply: bool,
    forwarded: bool,
    metadata: Metadata | None,
    time_ns: int,
    udp: bool = False,
) -> flow_pb2.Flow:
    """An L7 flow's frame (without its ``l7`` record): the caller fills ``flow.l7``.
    udp: the ports go to ``l4.UDP`` (DNS over UDP) instead of ``l4.TCP``."""
    flow = flow_pb2.Flow()
    flow.time.FromNanoseconds(time_ns)
    flow.verdict = flow_pb2.FORWARDED if forwarded else flow_pb2.DROPPED
    flow.Type = flow_pb2.L7
    flow.node_name = node_name
    flow.IP.source, flow.IP.destination = source[0], destination[0]
    flow.IP.ipVersion = flow_pb2.IPv6 if ":" in source[0] else flow_pb2.IPv4
    l4 = flow.l4.UDP if udp else flow.l4.TCP
    l4.source_port, l4.destination_port = source[1], destination[1]
    _endpoint(flow.source, source[0], metadata)
    _endpoint(flow.destination, destination[0], metadata)
    flow.event_type.type = ACCESS_LOG_EVENT
    flow.traffic_direction = flow_pb2.INGRESS if ingress else flow_pb2.EGRESS
    flow.is_reply.value = reply
    fill_names(flow, getattr(metadata, "fqdn_names", None))  # --fqdn, as on L3/L4 flows
    return flow


def http_frames(
    connection: Connection,
    *,
    node_name: str,
    ingress: bool,
    allowed: bool,
    metadata: Metadata | None,
) -> tuple[flow_pb2.Flow, flow_pb2.Flow]:
    """The request's and the response's frames of a connection's HTTP flows: the same for
    every request between the same client address and server address and port (verdict
    aside; the client's port is set per request by http_flows), so the publisher builds them
    once for all such connections."""
    client = (connection.source, connection.source_port)
    server = (connection.destination, connection.destination_port)
    request = l7_flow(
        node_name=node_name,
        source=client,
        destination=server,
        ingress=ingress,
        reply=False,
        forwarded=allowed,
        metadata=metadata,
        time_ns=0,
    )
    response = l7_flow(
        node_name=node_name,
        source=server,
        destination=client,
        ingress=ingress,
        reply=True,
        forwarded=True,
        metadata=metadata,
        time_ns=0,
    )
    return request, response


def http_flows(
    record: HttpRecord,
    *,
    node_name: str,
    ingress: bool,
    metadata: Metadata | None,
    now_ns: int | None = None,
    frames: tuple[flow_pb2.Flow, flow_pb2.Flow] | None = None,
) -> list[flow_pb2.Flow]:
    """The request flow and, for an allowed request, the response flow of `record` (on
    `frames` of http_frames when given: copied, never changed)."""
    now = time.time_ns() if now_ns is None else now_ns
    if frames is None:
        frames = http_frames(
            record.connection,
            node_name=node_name,
            ingress=ingress,
            allowed=record.allowed,
            metadata=metadata,
        )
    url = redact_userinfo(record.url)
    request = flow_pb2.Flow()
    request.CopyFrom(frames[0])
    client_port = record.connection.source_port  # frames are shared by a client's connections
    request.l4.TCP.source_port = client_port
    request.time.FromNanoseconds(now - record.latency_ns)
    request.l7.type = flow_pb2.REQUEST
    # A denied request's flow carries the proxy's 403, so --http-status selects it.
    _http(request.l7.http, record, url, with_code=not record.allowed)
    line = f"{record.method} {url}"
    request.Summary = f"{record.protocol} {line}"  # what -o compact prints, as Hubble's parser
    if not record.allowed:
        return [request]
    response = flow_pb2.Flow()
    response.CopyFrom(frames[1])
    response.l4.TCP.destination_port = client_port
    response.time.FromNanoseconds(now)
    response.l7.type = flow_pb2.RESPONSE
    response.l7.latency_ns = record.latency_ns
    _http(response.l7.http, record, url, with_code=True)
    response.Summary = (
        f"{record.protocol} {record.code} {record.latency_ns // 1_000_000}ms ({line})"
    )
    return [request, response]


def _http(http: flow_pb2.HTTP, record: HttpRecord, url: str, *, with_code: bool) -> None:
    http.method = record.method
    http.url = url
    http.protocol = record.protocol
    if with_code:
        http.code = record.code
    for key, value in record.headers:
        http.headers.add(key=key, value=value)


# The rule that let a proxied connection through at L3/L4 (its policy is the deciding one of
# the connection's L7 flows): (client, server, server port, "TCP"/"UDP", ingress) -> rule id,
# 0 when none is known.  The agent gives Compiler.l7_rule_id, cached per policy revision.
RuleOf = Callable[[str, str, int, str, bool], int]


def per_revision(rule_of: RuleOf, revision: Callable[[], int], size: int = 4096) -> RuleOf:
    """`rule_of` memoised while `revision()` stays: a connection's flows are many, the rule
    it met is one explain (thread-safe: both proxies' threads call it)."""

    @functools.lru_cache(maxsize=size)
    def cached(at: int, client: str, server: str, port: int, protocol: str, ingress: bool) -> int:
        return rule_of(client, server, port, protocol, ingress)

    return lambda *key: cached(revision(), *key)


def name_deciding_policy(flow: flow_pb2.Flow, metadata: Metadata, rule_id: int) -> None:
    """Hubble's *_allowed_by / *_denied_by of an L7 flow, as the L3/L4 flows have them: the
    policy whose rule redirected the connection allowed a forwarded request or answer, and
    denied a dropped one (a 403, a REFUSED), its L7 rules being that rule's."""
    policy = metadata.policy(rule_id) if rule_id else None
    if policy is None:
        return
    ingress = flow.traffic_direction == flow_pb2.INGRESS
    if flow.verdict == flow_pb2.FORWARDED:
        target = flow.ingress_allowed_by if ingress else flow.egress_allowed_by
    else:
        target = flow.ingress_denied_by if ingress else flow.egress_denied_by
    add_policy(target, policy)


def connection_of(flow: flow_pb2.Flow) -> tuple[str, str, int, str, bool]:
    """(client, server, server port, protocol, ingress) of an L7 flow, a reply's swapped."""
    udp = flow.l4.HasField("UDP")
    l4 = flow.l4.UDP if udp else flow.l4.TCP
    client, server = flow.IP.source, flow.IP.destination
    port = l4.destination_port
    if flow.is_reply.value:
        client, server, port = server, client, l4.source_port
    return (
        client,
        server,
        port,
        "UDP" if udp else "TCP",
        (flow.traffic_direction == flow_pb2.INGRESS),
    )


_FRAMES = 4096  # (client, server, port)s whose frames are kept; emptied when full


class L7FlowPublisher:
    def __init__(
        self,
        sink: FlowSink,
        *,
        node_name: str,
        metadata: Metadata | None = None,
        registry: CollectorRegistry | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        rule_of: RuleOf | None = None,
    ) -> None:
        self._sink = sink
        self._node_name = node_name
        self._metadata = metadata
        self._clock_ns = clock_ns
        self._rule_of = rule_of
        self._frames: dict[tuple[object, ...], tuple[flow_pb2.Flow, flow_pb2.Flow]] = {}
        self._children: dict[tuple[str, str, int, str], tuple[Any, Any]] = {}
        self._policy_bytes: dict[tuple[int, int, int, int], bytes] = {}
        self.requests = Counter(
            "hubble_http_requests_total",
            "Count of HTTP requests",
            ["method", "protocol", "status", "reporter"],
            registry=registry,
        )
        self.duration = Histogram(
            "hubble_http_request_duration_seconds",
            "Quantiles of HTTP request duration in seconds",
            ["method", "reporter"],
            registry=registry,
        )

    def publish(self, flow: flow_pb2.Flow) -> None:
        """Any L7 flow (the DNS proxy's too): into the node's flow ring, with its deciding
        policy when the agent said how to find it."""
        if self._rule_of is not None and self._metadata is not None:
            self._name_policy(flow, self._metadata, self._rule_of)
        self._sink.append_flow(flow)

    def _name_policy(self, flow: flow_pb2.Flow, metadata: Metadata, rule_of: RuleOf) -> None:
        """name_deciding_policy, its bytes kept per rule, side and verdict while the
        metadata's generation stays: merged in C, a third of building the message each time."""
        rule_id = rule_of(*connection_of(flow))
        if not rule_id:
            return
        key = (rule_id, flow.traffic_direction, flow.verdict, getattr(metadata, "generation", 0))
        encoded = self._policy_bytes.get(key)
        if encoded is None:
            probe = flow_pb2.Flow(traffic_direction=flow.traffic_direction, verdict=flow.verdict)
            name_deciding_policy(probe, metadata, rule_id)
            probe.ClearField("traffic_direction")
            probe.ClearField("verdict")
            if len(self._policy_bytes) >= 4096:  # old generations must not pile up
                self._policy_bytes.clear()
            encoded = self._policy_bytes[key] = probe.SerializeToString()
        if encoded:
            flow.MergeFromString(encoded)

    def http_hook(self, *, ingress: bool) -> Callable[[HttpRecord], None]:
        """The HttpProxy `on_record` callback of a proxy in that direction."""
        return lambda record: self.publish_http(record, ingress=ingress)

    def publish_http(self, record: HttpRecord, *, ingress: bool) -> None:
        # Per request only what differs: the connection's frames (endpoints, deciding
        # policy, names) are built once per connection, rule and generation of the metadata
        # and its learned names (cache_generation), and the metrics' children once per
        # label set (septum bench l7: 25 -> 12 us a record).  Keyed without the client's
        # port: a client opening a connection per request reuses them too.
        conn = record.connection
        rule = 0
        if self._rule_of is not None and self._metadata is not None:
            rule = self._rule_of(
                conn.source, conn.destination, conn.destination_port, "TCP", ingress
            )
        key = (
            conn.source,
            conn.destination,
            conn.destination_port,
            ingress,
            record.allowed,
            rule,
            cache_generation(self._metadata),
        )
        frames = self._frames.get(key)
        if frames is None:
            frames = http_frames(
                conn,
                node_name=self._node_name,
                ingress=ingress,
                allowed=record.allowed,
                metadata=self._metadata,
            )
            if rule and self._metadata is not None:
                for frame in frames:
                    name_deciding_policy(frame, self._metadata, rule)
            if len(self._frames) >= _FRAMES:
                self._frames.clear()
            self._frames[key] = frames
        for flow in http_flows(
            record,
            node_name=self._node_name,
            ingress=ingress,
            metadata=self._metadata,
            now_ns=self._clock_ns(),
            frames=frames,
        ):
            self._sink.append_flow(flow)
        reporter = "server" if ingress else "client"
        labels = (record.method, record.protocol, record.code, reporter)
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = (
                self.requests.labels(record.method, record.protocol, str(record.code), reporter),
                self.duration.labels(record.method, reporter),
            )
        children[0].inc()
        if record.allowed:
            children[1].observe(record.latency_ns / 1e9)
