"""Host endpoints (Cilium's host firewall): SeptumClusterwideNetworkPolicy with nodeSelector."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from septum.operator.engine.cluster import EndpointKey, HostKey, PodKey
from septum.operator.engine.entries import PolicyEntry, Verdict
from septum.operator.engine.errors import InvalidPolicy, UnknownEndpoint
from septum.operator.engine.explain import EndpointRef, evaluate, explain, resolve_endpoint
from septum.operator.engine.ports import parse_protocol_name
from septum.operator.engine.rules import Direction
from septum.operator.engine.state import Engine, apply_diff
from septum.operator.engine.whatif import Apply, Flow, what_if
from septum.wellknown.reserved import ReservedIdentity

HOST = int(ReservedIdentity.HOST)
REMOTE = int(ReservedIdentity.REMOTE_NODE)
WORLD4 = int(ReservedIdentity.WORLD_IPV4)


def node(name: str, ip: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    }


def pod(name: str, node_name: str, ip: str, app: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {
            "nodeName": node_name,
            "containers": [{"ports": [{"name": "http", "containerPort": 8080}]}],
        },
        "status": {"podIP": ip},
    }


def host_policy(name: str, selector: dict[str, Any], **sections: Any) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumClusterwideNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"nodeSelector": selector, **sections},
    }


SSH_FROM_CLUSTER = host_policy(
    "ssh",
    {"matchLabels": {"role": "edge"}},
    ingress=[{"fromEntities": ["cluster"], "toPorts": [{"ports": [{"port": "22"}]}]}],
)


def build(policies: list[dict[str, Any]]) -> Engine:
    engine = Engine()
    engine.load(
        namespaces=[{"metadata": {"name": "shop"}}],
        nodes=[node("n1", "192.168.0.1", role="edge"), node("n2", "192.168.0.2", role="worker")],
        pods=[pod("web", "n1", "10.0.0.1", "web"), pod("db", "n2", "10.0.0.2", "db")],
        policies=policies,
    )
    return engine


def verdict(engine: Engine, source: str, destination: str, port: int, proto: str = "TCP") -> bool:
    return explain(engine, source, destination, port, proto).allowed


def test_selection_by_node_labels() -> None:
    engine = build([SSH_FROM_CLUSTER])
    edge = engine.endpoint_policy(HostKey("n1"))
    assert edge.identity == HOST
    assert edge.ingress.enforced and not edge.egress.enforced
    assert not engine.endpoint_policy(HostKey("n2")).ingress.enforced
    # Pods are not selected by a nodeSelector.
    assert not engine.endpoint_policy(PodKey("shop", "web")).ingress.enforced
    assert engine.host_endpoints() == [HostKey("n1"), HostKey("n2")]


def test_unselected_host_allows_everything() -> None:
    engine = build([SSH_FROM_CLUSTER])
    assert verdict(engine, "192.0.2.7", "host:n2", 443)
    assert verdict(engine, "host:n2", "192.0.2.7", 443)
    assert not verdict(engine, "192.0.2.7", "host:n1", 443)


def test_from_entities_toward_a_host() -> None:
    engine = build([SSH_FROM_CLUSTER])
    assert verdict(engine, "shop/web", "host:n1", 22)  # same node: the `host` identity's peer
    assert verdict(engine, "shop/db", "host:n1", 22)  # pod on another node
    assert verdict(engine, "host:n2", "host:n1", 22)  # remote-node is in `cluster`
    assert not verdict(engine, "192.0.2.7", "host:n1", 22)  # world is not
    world = host_policy(
        "world", {"matchLabels": {"role": "edge"}}, ingress=[{"fromEntities": ["world"]}]
    )
    remote = host_policy(
        "remote", {"matchLabels": {"role": "edge"}}, ingress=[{"fromEntities": ["remote-node"]}]
    )
    engine = build([world, remote])
    assert verdict(engine, "192.0.2.7", "host:n1", 443)
    assert verdict(engine, "host:n2", "host:n1", 443)
    assert not verdict(engine, "shop/db", "host:n1", 443)
    ingress = engine.endpoint_policy(HostKey("n1")).ingress
    assert ingress.lookup(REMOTE, 6, 443) is not None
    assert ingress.lookup(REMOTE, 6, 443).verdict is Verdict.ALLOW  # type: ignore[union-attr]
    assert ingress.lookup(WORLD4, 6, 443).verdict is Verdict.ALLOW  # type: ignore[union-attr]


def test_deny_wins_and_explain_names_the_rule() -> None:
    deny = host_policy(
        "no-telnet",
        {},
        ingressDeny=[{"fromEntities": ["all"], "toPorts": [{"ports": [{"port": "23"}]}]}],
        ingress=[{"fromEntities": ["all"]}],
    )
    engine = build([deny])
    result = explain(engine, "shop/web", "host:n2", 23)
    assert not result.allowed
    assert result.ingress is not None
    assert "SeptumClusterwideNetworkPolicy no-telnet spec.ingressDeny[0]" in result.ingress.reason
    assert result.egress is not None and result.egress.allowed  # the pod is unselected
    assert verdict(engine, "shop/web", "host:n2", 80)
    entry = engine.endpoint_policy(HostKey("n2")).ingress.lookup(REMOTE, 6, 23)
    assert entry is not None and entry.verdict is Verdict.DENY


def test_default_deny_attribution_and_host_egress() -> None:
    egress = host_policy(
        "out",
        {"matchLabels": {"role": "worker"}},
        egress=[
            {
                "toEndpoints": [{"matchLabels": {"app": "web"}}],
                "toPorts": [{"ports": [{"port": "http"}]}],
            }
        ],
    )
    engine = build([egress])
    assert verdict(engine, "host:n2", "shop/web", 8080)  # named port of the peer (egress)
    result = explain(engine, "host:n2", "shop/db", 8080)
    assert result.egress is not None and not result.egress.allowed
    assert "default deny" in result.egress.reason and "out" in result.egress.reason
    assert "source" in result.egress.reason


def test_namespaced_policies_never_select_hosts() -> None:
    namespaced = {
        "apiVersion": "septum.io/v1alpha1",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "shop"},
        "spec": {"nodeSelector": {}, "ingress": [{}]},
    }
    engine = build([])
    with pytest.raises(InvalidPolicy, match="nodeSelector is only allowed in clusterwide"):
        engine.upsert_policy(namespaced)
    netpol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "all", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    pods_only = host_policy("x", {}, ingress=[{}])
    pods_only["spec"] = {"endpointSelector": {}, "ingress": [{}]}
    engine.upsert_policy(netpol)
    engine.upsert_policy(pods_only)
    for host in engine.host_endpoints():
        assert not engine.endpoint_policy(host).ingress.enforced
        assert verdict(engine, "192.0.2.7", str(host), 22)


def test_host_policies_take_no_http_rules() -> None:
    http = host_policy(
        "web",
        {},
        ingress=[{"toPorts": [{"ports": [{"port": "80"}], "rules": {"http": [{"path": "/"}]}}]}],
    )
    with pytest.raises(InvalidPolicy, match=r"spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http"):
        build([]).upsert_policy(http)


def test_unknown_host() -> None:
    with pytest.raises(UnknownEndpoint, match="host:n9"):
        explain(build([]), "host:n9", "shop/web", 80)


def _view(engine: Engine) -> dict[EndpointKey, frozenset[PolicyEntry]]:
    view: dict[EndpointKey, frozenset[PolicyEntry]] = {
        key: engine.endpoint_policy(key).entries() for key in engine.endpoints()
    }
    for host in engine.host_endpoints():
        entries = engine.endpoint_policy(host).entries()
        if entries:
            view[host] = entries
    return view


def _norm(
    view: dict[EndpointKey, frozenset[PolicyEntry]],
) -> dict[EndpointKey, frozenset[PolicyEntry]]:
    """A host endpoint without entries is unenforced, whether or not a diff named it."""
    return {k: v for k, v in view.items() if v or not isinstance(k, HostKey)}


def test_incremental_node_and_policy_updates() -> None:
    engine = build([])
    view = _view(engine)
    changes = engine.upsert_policy(SSH_FROM_CLUSTER)
    assert set(changes.endpoints) == {HostKey("n1")}  # only the selected host
    apply_diff(view, changes)
    assert _norm(view) == _view(engine)
    # Relabel n2 so the policy selects it too: only n2's host endpoint changes.
    changes = engine.upsert_node(node("n2", "192.168.0.2", role="edge"))
    assert set(changes.endpoints) == {HostKey("n2")}
    assert changes.endpoints[HostKey("n2")].added == engine.endpoint_policy(HostKey("n1")).entries()
    apply_diff(view, changes)
    changes = engine.upsert_node(node("n3", "192.168.0.3", role="edge"))
    apply_diff(view, changes)
    assert HostKey("n3") in changes.endpoints
    changes = engine.delete_node("n1")
    assert HostKey("n1") in changes.removed_endpoints
    apply_diff(view, changes)
    assert _norm(view) == _view(engine)
    apply_diff(view, engine.delete_policy(next(iter(engine.policies))))
    assert _norm(view) == _view(engine) and not any(isinstance(k, HostKey) for k in _norm(view))


# ---- properties --------------------------------------------------------

NODES = ("n1", "n2", "n3")
ROLES = ("edge", "worker")
host_peer = st.sampled_from(
    [
        {},
        {"fromEntities": ["cluster"]},
        {"fromEntities": ["world"]},
        {"fromEntities": ["remote-node"]},
        {"fromEntities": ["host"]},
        {"fromEndpoints": [{"matchLabels": {"app": "web"}}]},
        {"fromCIDR": ["192.0.2.0/24"]},
    ]
)
host_ports = st.sampled_from([None, [{"ports": [{"port": "22"}]}], [{"ports": [{"port": "http"}]}]])


@st.composite
def host_rule(draw: Any, direction: str) -> dict[str, Any]:
    rule = dict(draw(host_peer))
    ports = draw(host_ports)
    if ports:
        rule["toPorts"] = ports
    if direction.startswith("egress"):
        rule = {k.replace("from", "to", 1): v for k, v in rule.items()}
    return rule


@st.composite
def random_host_policy(draw: Any) -> dict[str, Any]:
    selector = draw(st.sampled_from([{}, {"matchLabels": {"role": "edge"}}]))
    sections: dict[str, Any] = {}
    for section in ("ingress", "egress", "ingressDeny", "egressDeny"):
        if draw(st.booleans()):
            sections[section] = [draw(host_rule(section))]
    return host_policy(f"h{draw(st.integers(0, 2))}", selector, **sections)


operation = st.one_of(
    st.tuples(st.just("node"), st.sampled_from(NODES), st.sampled_from(ROLES)),
    st.tuples(st.just("drop-node"), st.sampled_from(NODES), st.just("")),
    st.tuples(st.just("policy"), random_host_policy(), st.just("")),
    st.tuples(st.just("drop-policy"), st.integers(0, 2), st.just("")),
    st.tuples(st.just("pod"), st.sampled_from(NODES), st.sampled_from(("web", "db"))),
    st.tuples(st.just("pod-policy"), st.sampled_from(("host", "remote-node")), st.just("")),
)
PROBES = (("TCP", 22), ("TCP", 8080), ("UDP", 53))


def _agree(engine: Engine) -> None:
    """explain and the compiled entries agree for every endpoint, host peers included."""
    refs: list[EndpointRef] = [resolve_endpoint(engine, str(k)) for k in engine.endpoints()]
    hosts = [resolve_endpoint(engine, str(h)) for h in engine.host_endpoints()]
    refs += hosts + [resolve_endpoint(engine, "192.0.2.7")]
    for subject in refs:
        if not subject.managed:
            continue
        if subject.host is not None:
            policy = engine.endpoint_policy(HostKey(subject.host))
        else:
            policy = engine.endpoint_policy(PodKey(*subject.description.split(" ")[0].split("/")))
        for peer in refs:
            same = bool(subject.node) and peer.host == subject.node
            seen = HOST if same else REMOTE if peer.host else peer.identity
            assert seen is not None
            for name, port in PROBES:
                proto = parse_protocol_name(name)
                for direction, compiled in (
                    (Direction.INGRESS, policy.ingress),
                    (Direction.EGRESS, policy.egress),
                ):
                    expected = evaluate(engine, subject, peer, direction, proto, port)
                    entry = compiled.lookup(seen, proto, port)
                    if entry is None:
                        assert expected.allowed, expected.reason
                        continue
                    assert (entry.verdict is Verdict.ALLOW) == expected.allowed, expected.reason
                    assert entry.rule_id == expected.rule_id, (entry, expected.reason)


@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(operation, min_size=1, max_size=8))
def test_incremental_host_diffs_equal_a_full_recompute(ops: list[tuple[str, Any, str]]) -> None:
    engine = build([])
    view = _view(engine)
    pods = 0
    for kind, arg, extra in ops:
        if kind == "node":
            number = NODES.index(arg) + 1
            changes = engine.upsert_node(node(arg, f"192.168.0.{number}", role=extra))
        elif kind == "drop-node":
            changes = engine.delete_node(arg)
        elif kind == "policy":
            changes = engine.upsert_policy(arg)
        elif kind == "drop-policy":
            key = next((k for k in engine.policies if k.name == f"h{arg}"), None)
            if key is None:
                continue
            changes = engine.delete_policy(key)
        elif kind == "pod-policy":
            # Pods toward host endpoints: `host` is their own node, `remote-node` the others.
            pod_policy = host_policy(
                "p0", {}, egress=[{"toEntities": [arg], "toPorts": [{"ports": [{"port": "22"}]}]}]
            )
            pod_policy["spec"]["endpointSelector"] = pod_policy["spec"].pop("nodeSelector")
            changes = engine.upsert_policy(pod_policy)
        else:
            pods += 1
            changes = engine.upsert_pod(pod(f"q{pods}", arg, f"10.0.1.{pods}", extra))
        apply_diff(view, changes)
        assert _norm(view) == _view(engine)
        fresh = engine.recompute_hosts()
        for name in engine.nodes:
            assert engine.endpoint_policy(HostKey(name)).entries() == fresh[name].entries()
    _agree(engine)


def test_what_if_reports_host_endpoints() -> None:
    engine = build([])
    report = what_if(engine, [Apply(SSH_FROM_CLUSTER)], [Flow("192.0.2.7", "host:n1", 22)])
    assert set(report.endpoint_diffs) == {HostKey("n1")}
    assert [change.changed for change in report.flows] == [True]
    assert not engine.host_compiled  # the live engine is untouched
