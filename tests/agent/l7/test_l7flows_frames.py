"""The publisher builds a connection's flow frames once and copies them per request: the flows
are those http_flows builds from scratch, one request's fields never leak into the next, and a
metadata change (a pod's labels) shows in the connection's next flows."""

from __future__ import annotations

from septum.agent.l7.httpproxy import Connection, HttpRecord
from septum.agent.l7.l7flows import L7FlowPublisher, http_flows, name_deciding_policy
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.metadata import EndpointInfo, PolicyInfo, StaticMetadata

CONN = Connection("10.0.0.3", 43000, "10.0.0.2", 80)
NOW = 1_700_000_000_000_000_000


class Ring:
    def __init__(self) -> None:
        self.flows: list[flow_pb2.Flow] = []

    def append_flow(self, flow: flow_pb2.Flow) -> None:
        self.flows.append(flow)


def _metadata(app: str) -> StaticMetadata:
    metadata = StaticMetadata()
    metadata.add_policy(7, PolicyInfo("landing", "default", "CiliumNetworkPolicy"))
    metadata.add_endpoint(EndpointInfo(1, 1001, "default", "tiefighter", (f"k8s:app={app}",),
                                       ips=("10.0.0.3",)))  # fmt: skip
    return metadata


def _record(path: str, allowed: bool, headers: tuple[tuple[str, str], ...]) -> HttpRecord:
    code = 200 if allowed else 403
    return HttpRecord(CONN, "GET", f"http://deathstar{path}", "HTTP/1.1", headers, allowed,
                      code, 2_000_000 if allowed else 0, 0 if allowed else -1)  # fmt: skip


def _publisher(metadata: StaticMetadata, ring: Ring) -> L7FlowPublisher:
    return L7FlowPublisher(
        ring, node_name="n", metadata=metadata, clock_ns=lambda: NOW, rule_of=lambda *_: 7
    )


def test_copied_frames_give_the_flows_built_from_scratch() -> None:
    metadata, ring = _metadata("tiefighter"), Ring()
    publisher = _publisher(metadata, ring)
    records = [
        _record("/v1/a", True, (("host", "deathstar"), ("x-a", "1"))),
        _record("/v1/b", True, ()),  # fewer headers than the one before: nothing carried over
        _record("/v1/c", False, (("host", "deathstar"),)),
        _record("/v1/d", True, (("host", "deathstar"),)),
    ]
    expected: list[flow_pb2.Flow] = []
    for record in records:
        publisher.publish_http(record, ingress=False)
        for flow in http_flows(record, node_name="n", ingress=False, metadata=metadata, now_ns=NOW):
            name_deciding_policy(flow, metadata, 7)
            expected.append(flow)
    assert ring.flows == expected
    assert [f.l7.http.url for f in ring.flows] == [
        "http://deathstar/v1/a",
        "http://deathstar/v1/a",
        "http://deathstar/v1/b",
        "http://deathstar/v1/b",
        "http://deathstar/v1/c",
        "http://deathstar/v1/d",
        "http://deathstar/v1/d",
    ]
    assert [len(f.l7.http.headers) for f in ring.flows] == [2, 2, 0, 0, 1, 1, 1]


def test_a_metadata_change_shows_in_the_connections_next_flows() -> None:
    metadata, ring = _metadata("tiefighter"), Ring()
    publisher = _publisher(metadata, ring)
    publisher.publish_http(_record("/1", True, ()), ingress=False)
    metadata.add_endpoint(EndpointInfo(1, 1001, "default", "tiefighter", ("k8s:app=xwing",),
                                       ips=("10.0.0.3",)))  # fmt: skip
    publisher.publish_http(_record("/2", True, ()), ingress=False)
    assert [list(f.source.labels) for f in ring.flows[::2]] == [
        ["k8s:app=tiefighter"],
        ["k8s:app=xwing"],
    ]


def test_a_name_learned_or_expired_shows_in_the_connections_next_flows() -> None:
    """The frames carry destination_names (--fqdn); learning or expiring a name does not
    move the metadata's generation, the DNS proxy cache's generation keys the frames too."""
    import ipaddress

    from septum.agent.l7.dnsagent import LearnedNames
    from septum.agent.l7.fqdncache import FqdnCache

    metadata, ring = _metadata("tiefighter"), Ring()
    cache = FqdnCache()
    metadata.fqdn_names = LearnedNames(cache)  # type: ignore[attr-defined]  # as the agent does
    publisher = _publisher(metadata, ring)
    publisher.publish_http(_record("/1", True, ()), ingress=False)
    address = ipaddress.ip_address(CONN.destination)
    cache.learn("default/tiefighter", "deathstar.empire.example.", [(address, 30)], now=0)
    publisher.publish_http(_record("/2", True, ()), ingress=False)
    cache.expire(31, lambda *_: None)
    publisher.publish_http(_record("/3", True, ()), ingress=False)
    assert [list(f.destination_names) for f in ring.flows[::2]] == [
        [],
        ["deathstar.empire.example"],
        [],
    ]


def test_a_new_connection_per_request_reuses_the_frames_with_its_own_port() -> None:
    # One client opening a connection per request (wrk -H 'Connection: close'): the frames are
    # built once for (client, server, port), and each flow carries its own connection's port.
    metadata, ring = _metadata("tiefighter"), Ring()
    publisher = _publisher(metadata, ring)
    expected: list[flow_pb2.Flow] = []
    for port, allowed in ((43001, True), (43002, False), (43003, True)):
        conn = Connection(CONN.source, port, CONN.destination, CONN.destination_port)
        record = _record("/v1/x", allowed, ())._replace(connection=conn)
        publisher.publish_http(record, ingress=False)
        for flow in http_flows(record, node_name="n", ingress=False, metadata=metadata, now_ns=NOW):
            name_deciding_policy(flow, metadata, 7)
            expected.append(flow)
    assert ring.flows == expected
    assert [(f.l4.TCP.source_port, f.l4.TCP.destination_port) for f in ring.flows] == [
        (43001, 80),
        (80, 43001),
        (43002, 80),
        (43003, 80),
        (80, 43003),
    ]
    assert len(publisher._frames) == 2  # allowed and denied, whatever the client's port
