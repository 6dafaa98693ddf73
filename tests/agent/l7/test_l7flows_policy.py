"""L7 flows name their deciding policy (Hubble's *_allowed_by / *_denied_by), as the L3/L4
flows do: the policy of the rule that let the proxied connection through."""

from __future__ import annotations

from septum.agent.l7.httpproxy import Connection, HttpRecord
from septum.agent.l7.l7flows import L7FlowPublisher, connection_of, l7_flow, per_revision
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.metadata import EndpointInfo, PolicyInfo, StaticMetadata

RULE1 = PolicyInfo("rule1", "default", "SeptumNetworkPolicy", ("k8s:app=deathstar",), 4)
CONN = Connection("10.0.0.3", 43000, "10.0.0.2", 80)  # tiefighter -> deathstar:80
URL = "http://deathstar.default.svc.cluster.local"


class Ring:
    def __init__(self) -> None:
        self.flows: list[flow_pb2.Flow] = []

    def append_flow(self, flow: flow_pb2.Flow) -> None:
        self.flows.append(flow)


def _names(flow: flow_pb2.Flow, field: str) -> list[tuple[str, str, str, int]]:
    return [(p.kind, p.namespace, p.name, p.revision) for p in getattr(flow, field)]


def test_http_flows_name_the_policy_that_allowed_or_denied_them() -> None:
    metadata = StaticMetadata()
    metadata.add_policy(7, RULE1)
    asked: list[tuple[str, str, int, str, bool]] = []

    def rule_of(client: str, server: str, port: int, protocol: str, ingress: bool) -> int:
        asked.append((client, server, port, protocol, ingress))
        return 7

    ring = Ring()
    publisher = L7FlowPublisher(ring, node_name="n", metadata=metadata, rule_of=rule_of)
    headers = (("host", "deathstar.default.svc.cluster.local"),)
    landing = HttpRecord(CONN, "POST", f"{URL}/v1/request-landing", "HTTP/1.1", headers, True,
                         200, 1_000_000, 0)  # fmt: skip
    exhaust = HttpRecord(CONN, "PUT", f"{URL}/v1/exhaust-port", "HTTP/1.1", headers, False,
                         403, 0, -1)  # fmt: skip
    publisher.publish_http(landing, ingress=True)
    publisher.publish_http(exhaust, ingress=True)
    request, response, refused = ring.flows
    named = [("SeptumNetworkPolicy", "default", "rule1", 4)]
    assert _names(request, "ingress_allowed_by") == named
    assert _names(response, "ingress_allowed_by") == named  # the reply: same connection
    assert _names(refused, "ingress_denied_by") == named
    assert not _names(refused, "ingress_allowed_by") and not _names(request, "egress_allowed_by")
    # Every flow was asked about as the connection: client, server, server port, ingress.
    assert set(asked) == {("10.0.0.3", "10.0.0.2", 80, "TCP", True)}
    assert connection_of(response) == ("10.0.0.3", "10.0.0.2", 80, "TCP", True)


def test_no_rule_no_name_and_the_lookup_is_memoised_per_revision() -> None:
    metadata = StaticMetadata()
    ring = Ring()
    L7FlowPublisher(ring, node_name="n", metadata=metadata, rule_of=lambda *_: 0).publish_http(
        HttpRecord(CONN, "GET", f"{URL}/", "HTTP/1.1", (), True, 200, 0, 0), ingress=False
    )
    assert all(not f.egress_allowed_by and not f.egress_denied_by for f in ring.flows)

    calls: list[int] = []
    revision = [1]

    def rule_of(*_: object) -> int:
        calls.append(1)
        return 3

    cached = per_revision(rule_of, lambda: revision[0])
    key = ("10.0.0.3", "10.0.0.2", 80, "TCP", True)
    assert cached(*key) == cached(*key) == 3 and len(calls) == 1
    revision[0] = 2  # a policy change: asked again
    assert cached(*key) == 3 and len(calls) == 2


def test_l7_flows_carry_the_names_the_client_learned() -> None:
    class Learned:
        def names_of(self, endpoint: str, address: str) -> list[str]:
            return ["api.outside.example"] if address == "203.0.113.10" else []

    metadata = StaticMetadata()
    metadata.add_endpoint(EndpointInfo(1, 1001, "default", "client", ips=("10.0.0.5",)))
    metadata.fqdn_names = Learned()  # type: ignore[attr-defined]  # the agent's DNS proxy
    flow = l7_flow(
        node_name="n", source=("10.0.0.5", 40000), destination=("203.0.113.10", 80),
        ingress=False, reply=False, forwarded=True, metadata=metadata, time_ns=1,
    )  # fmt: skip
    assert list(flow.destination_names) == ["api.outside.example"]
