"""NetworkPolicy follows the upstream API where Septum's identities carry more than the pod.

Selectors: a podSelector sees only the pod's own labels and a namespaceSelector only the
namespace's, never the keys Septum adds to identities (namespace, namespace labels, service
account, cluster). Septum's own (Cilium-shaped) policies keep reading those keys.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import explain
from septum.operator.engine.podclass import ADDRESS_BLOCKS_KEY
from septum.operator.engine.rules import PolicyKey
from septum.operator.engine.state import Engine
from septum.wellknown.reserved import LOCAL_IDENTITY_MIN
from tests.operator.engine.test_admin_tier_conformance import cnp
from tests.operator.engine.test_netpol_e2e_truth_tables import POD_A, expr, labels, np, ns_is

ADDED_KEYS = (
    "io.kubernetes.pod.namespace",
    "io.cilium.k8s.policy.serviceaccount",
    "io.cilium.k8s.policy.cluster",
    "io.cilium.k8s.namespace.labels.ns",
)
ADDED_VALUES = {
    "io.kubernetes.pod.namespace": "x",
    "io.cilium.k8s.policy.serviceaccount": "default",
    "io.cilium.k8s.policy.cluster": "default",
    "io.cilium.k8s.namespace.labels.ns": "x",
}


def _septum_policy(sections: dict[str, Any]) -> dict[str, Any]:
    """A SeptumNetworkPolicy in x selecting x/a with these rule sections."""
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"endpointSelector": {"matchLabels": {"pod": "a"}}, **sections},
    }


def _check(e2e: Any, engine: Any, reach: Any) -> None:
    bad = e2e.mismatches(engine, reach, 80, "TCP")
    assert not bad, "\n".join(bad[:20]) + "\n" + e2e.matrix(engine, 80, "TCP")
    fresh = engine.recompute_all()
    assert fresh == {n: engine.compiled[n] for n in fresh}


@pytest.mark.parametrize("key", ADDED_KEYS)
def test_peer_pod_selector_on_an_added_key_matches_no_pod(e2e: Any, key: str) -> None:
    engine = e2e.build()
    peer = {"podSelector": labels(**{key: ADDED_VALUES[key]}), "namespaceSelector": {}}
    engine.upsert_policy(np("p", "x", POD_A, ingress=[{"from": [peer]}]))
    _check(e2e, engine, e2e.Reach().all_ingress("x/a", False))


@pytest.mark.parametrize("key", ADDED_KEYS)
def test_subject_pod_selector_on_an_added_key_isolates_no_pod(e2e: Any, key: str) -> None:
    engine = e2e.build()
    engine.upsert_policy(np("p", "x", labels(**{key: ADDED_VALUES[key]}), ingress=[]))
    _check(e2e, engine, e2e.Reach())


@pytest.mark.parametrize("key", ADDED_KEYS)
def test_does_not_exist_on_an_added_key_matches_every_pod(e2e: Any, key: str) -> None:
    """No pod carries the key itself, so DoesNotExist holds for every pod (the upstream answer)."""
    engine = e2e.build()
    selector = {"matchExpressions": [{"key": key, "operator": "DoesNotExist"}]}
    engine.upsert_policy(np("p", "x", selector, ingress=[]))
    reach = e2e.Reach()
    for pod in ("a", "b", "c"):
        reach.all_ingress(f"x/{pod}", False)
    _check(e2e, engine, reach)


def test_a_pods_own_label_under_an_added_key_is_not_trusted(e2e: Any) -> None:
    """A pod labelling itself io.kubernetes.pod.namespace=y is not selected as if in y."""
    engine = e2e.build()
    engine.upsert_pod(e2e.pod("x", "b", {"io.kubernetes.pod.namespace": "y"}))
    peer = {"podSelector": labels(**{"io.kubernetes.pod.namespace": "y"})}
    engine.upsert_policy(np("p", "x", POD_A, ingress=[{"from": [peer]}]))
    _check(e2e, engine, e2e.Reach().all_ingress("x/a", False))


def test_namespace_selector_sees_only_namespace_labels(e2e: Any) -> None:
    engine = e2e.build()
    for key in ("io.kubernetes.pod.namespace", "io.cilium.k8s.policy.serviceaccount"):
        peer = {"namespaceSelector": labels(**{key: ADDED_VALUES[key]})}
        engine.upsert_policy(np(f"p-{key[-4:]}", "x", POD_A, ingress=[{"from": [peer]}]))
    _check(e2e, engine, e2e.Reach().all_ingress("x/a", False))


def test_namespace_selector_match_expressions_on_namespace_labels(e2e: Any) -> None:
    """Upstream: "should enforce policy based on NamespaceSelector with MatchExpressions"."""
    engine = e2e.build()
    peer = {"namespaceSelector": expr("ns", "In", "y")}
    engine.upsert_policy(np("p", "x", POD_A, ingress=[{"from": [peer]}]))
    reach = e2e.Reach().all_ingress("x/a", False).peer(("y", None), ("x", "a"), True)
    _check(e2e, engine, reach)
    # A namespace label change moves the namespace in and out of the selection.
    engine.upsert_namespace(e2e.namespace("z", {"ns": "y"}))
    _check(e2e, engine, reach.peer(("z", None), ("x", "a"), True))


def test_septum_policy_keeps_reading_the_added_keys(e2e: Any) -> None:
    engine = e2e.build()
    from_y = {"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "y"}}]}
    engine.upsert_policy(_septum_policy({"ingress": [from_y]}))
    reach = e2e.Reach().all_ingress("x/a", False).peer(("y", None), ("x", "a"), True)
    _check(e2e, engine, reach)


def test_pod_template_hash_selects_no_pod(e2e: Any) -> None:
    """A filtered key is in no identity: as a subject the policy isolates no pod (documented)."""
    engine = e2e.build()
    engine.upsert_pod(e2e.pod("x", "a", {"pod-template-hash": "5d8c"}))
    engine.upsert_policy(np("p", "x", labels(**{"pod-template-hash": "5d8c"}), ingress=[]))
    _check(e2e, engine, e2e.Reach())
    peer = {
        "podSelector": expr(
            "pod-template-hash",
            "DoesNotExist",
        )
    }
    peer["podSelector"]["matchExpressions"][0].pop("values")
    engine.upsert_policy(np("q", "x", POD_A, ingress=[{"from": [peer]}]))
    reach = e2e.Reach().all_ingress("x/a", False).peer(("x", None), ("x", "a"), True)
    _check(e2e, engine, reach)


POD_NAME = "statefulset.kubernetes.io/pod-name"


def _stateful_pair(e2e: Any) -> Any:
    """x/a and x/b: one label set ({pod: s}) but for the filtered pod-name label."""
    engine = e2e.build()
    engine.upsert_pod(e2e.pod("x", "a", {"pod": "s", POD_NAME: "web-0"}))
    engine.upsert_pod(e2e.pod("x", "b", {"pod": "s", POD_NAME: "web-1"}))
    return engine


def _ids(engine: Any) -> tuple[int, int]:
    return engine.pod_identity[PodKey("x", "a")], engine.pod_identity[PodKey("x", "b")]


def test_subject_selector_on_a_filtered_key_selects_the_pod_that_carries_it(e2e: Any) -> None:
    """A podSelector reads the pod's own labels, filtered ones too (network-policy-api's
    conformance selects StatefulSet pods by `statefulset.kubernetes.io/pod-name`)."""
    engine = _stateful_pair(e2e)
    assert len(set(_ids(engine))) == 1  # nothing selects on the key yet: one identity
    engine.upsert_policy(np("p", "x", labels(**{POD_NAME: "web-0"}), ingress=[]))
    a_id, b_id = _ids(engine)
    assert a_id != b_id and a_id >= LOCAL_IDENTITY_MIN  # web-0 split off, node-local
    _check(e2e, engine, e2e.Reach().all_ingress("x/a", False))
    engine.delete_policy(PolicyKey("NetworkPolicy", "x", "p"))
    assert len(set(_ids(engine))) == 1  # merged back once no policy reads the key
    _check(e2e, engine, e2e.Reach())


def test_peer_selector_on_a_filtered_key_admits_only_that_pod(e2e: Any) -> None:
    engine = _stateful_pair(e2e)
    peer = {"podSelector": labels(**{POD_NAME: "web-1"})}
    engine.upsert_policy(np("p", "x", labels(pod="c"), ingress=[{"from": [peer]}]))
    reach = e2e.Reach().all_ingress("x/c", False).expect("x/b", "x/c", True)
    _check(e2e, engine, reach)
    for name, allowed in (("web-1", True), ("web-2", False)):
        source = {"namespace": "x", "labels": {"pod": "s", POD_NAME: name}}
        assert explain(engine, source, "x/c", 80, 6).allowed is allowed, name
    not_in = {"podSelector": expr(POD_NAME, "NotIn", "web-1")}
    engine.upsert_policy(np("q", "x", labels(pod="c"), ingress=[{"from": [not_in]}]))
    reach = e2e.Reach().all_ingress("x/c", False).peer(("x", None), ("x", "c"), True)
    _check(e2e, engine, reach)


def test_septum_policy_on_a_filtered_key_matches_no_pod(e2e: Any) -> None:
    """Cilium's rule for its own policies: a filtered label is in no identity, even while a
    NetworkPolicy's selector on the same key splits the pods."""
    engine = _stateful_pair(e2e)
    engine.upsert_policy(np("q", "x", labels(**{POD_NAME: "web-0"}), ingress=[]))
    policy = _septum_policy(
        {"ingress": [{"fromEndpoints": [{"matchLabels": {POD_NAME: "web-1"}}]}]}
    )
    policy["spec"]["endpointSelector"] = {"matchLabels": {"pod": "c"}}
    engine.upsert_policy(policy)
    reach = e2e.Reach().all_ingress("x/a", False).all_ingress("x/c", False)
    _check(e2e, engine, reach)


# ---- ipBlock and pod addresses ----------------------------------------------------------

Y_B = "10.1.1.10"  # the e2e model's y/b (conftest.pod_obj)


def _egress_cidr(name: str, cidr: str, excepts: list[str] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    if excepts:
        block["except"] = excepts
    return np(name, "x", POD_A, egress=[{"to": [{"ipBlock": block}]}])


def test_upstream_egress_access_to_server_in_cidr_block(e2e: Any) -> None:
    """e2e: "should allow egress access to server in CIDR block"."""
    engine = e2e.build()
    engine.upsert_policy(_egress_cidr("allow-client-a-via-cidr-egress-rule", f"{Y_B}/32"))
    _check(e2e, engine, e2e.Reach().all_egress("x/a", False).expect("x/a", "y/b", True))


def test_upstream_except_clause_in_cidr_block(e2e: Any) -> None:
    """e2e: "should enforce except clause while egress access to server in CIDR block"."""
    engine = e2e.build()
    policy = _egress_cidr("allow-client-a-via-cidr-egress-rule", f"{Y_B}/4", [f"{Y_B}/32"])
    engine.upsert_policy(policy)
    _check(e2e, engine, e2e.Reach().expect("x/a", "y/b", False))


def test_upstream_ip_in_both_cidr_and_except_is_allowed(e2e: Any) -> None:
    """e2e: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"."""
    engine = e2e.build()
    policy = _egress_cidr("allow-client-a-via-cidr-egress-rule", f"{Y_B}/4", [f"{Y_B}/32"])
    engine.upsert_policy(policy)
    _check(e2e, engine, e2e.Reach().expect("x/a", "y/b", False))
    engine.upsert_policy(_egress_cidr("allow-client-a-via-cidr-egress-rule-2", f"{Y_B}/32"))
    _check(e2e, engine, e2e.Reach())
    # Deleting the policies again restores the pods' own identities.
    engine.delete_policy(PolicyKey("NetworkPolicy", "x", "allow-client-a-via-cidr-egress-rule"))
    engine.delete_policy(PolicyKey("NetworkPolicy", "x", "allow-client-a-via-cidr-egress-rule-2"))
    _check(e2e, engine, e2e.Reach())
    assert not any(engine.pod_labels(k).has(ADDRESS_BLOCKS_KEY) for k in engine.pods)


def test_ingress_ip_block_with_except_matches_pod_sources(e2e: Any) -> None:
    """Ingress: pods inside the block may connect, the one in `except` may not."""
    engine = e2e.build()
    block = {"ipBlock": {"cidr": "10.1.0.0/16", "except": [f"{Y_B}/32"]}}
    engine.upsert_policy(np("p", "x", POD_A, ingress=[{"from": [block]}]))
    reach = e2e.Reach().all_ingress("x/a", False).peer(("y", None), ("x", "a"), True)
    _check(e2e, engine, reach.expect("y/b", "x/a", False))


def _twin_pod(e2e: Any, name: str, ip: str, ports: list[dict[str, Any]] | None = None) -> Any:
    """A pod with y/b's labels (so y/b's label set) at address `ip`."""
    pod = e2e.pod("y", "b")
    pod["metadata"]["name"] = name
    pod["status"]["podIP"] = ip
    if ports is not None:
        pod["spec"]["containers"][0]["ports"] = ports
    return pod


def _allowed(engine: Any, src: str, dst: str, port: int) -> tuple[bool, bool]:
    """(explain's verdict, the compiled entries' verdict) for TCP `port`."""
    s_ns, s_name = src.split("/")
    d_ns, d_name = dst.split("/")
    s_key, d_key = PodKey(s_ns, s_name), PodKey(d_ns, d_name)
    egress = engine.endpoint_policy(s_key).egress.lookup(engine.pod_identity[d_key], 6, port)
    ingress = engine.endpoint_policy(d_key).ingress.lookup(engine.pod_identity[s_key], 6, port)
    by_entries = all(e is None or e.verdict.value == "allow" for e in (egress, ingress))
    return explain(engine, src, dst, port, "TCP").allowed, by_entries


def test_pods_of_one_label_set_on_both_sides_of_an_except(e2e: Any) -> None:
    """Two pods share a label set; one address is in `except`: they get distinct identities
    (the split class is node-local), and only the other one is reachable."""
    engine = e2e.build()
    engine.upsert_pod(_twin_pod(e2e, "b2", "10.1.1.11"))
    assert engine.pod_identity[PodKey("y", "b")] == engine.pod_identity[PodKey("y", "b2")]
    policy = _egress_cidr("p", "10.0.0.0/8", [f"{Y_B}/32"])
    engine.upsert_policy(policy)
    b, b2 = engine.pod_identity[PodKey("y", "b")], engine.pod_identity[PodKey("y", "b2")]
    assert b != b2 and b >= LOCAL_IDENTITY_MIN and b2 >= LOCAL_IDENTITY_MIN
    assert engine.ipcache()[ipaddress.ip_network(f"{Y_B}/32")] == b
    assert engine.ipcache()[ipaddress.ip_network("10.1.1.11/32")] == b2
    assert _allowed(engine, "x/a", "y/b", 80) == (False, False)
    assert _allowed(engine, "x/a", "y/b2", 80) == (True, True)
    # Every selector still treats both like the label set: a podSelector admits both.
    engine.upsert_policy(
        np("q", "y", labels(pod="b"), ingress=[{"from": [{"namespaceSelector": ns_is("x")}]}])
    )
    assert _allowed(engine, "x/b", "y/b", 80) == (True, True)
    assert _allowed(engine, "x/b", "y/b2", 80) == (True, True)
    assert _allowed(engine, "z/a", "y/b2", 80) == (False, False)
    # The pod moves out of the except: both share the class again.
    engine.upsert_pod(_twin_pod(e2e, "b", "10.1.1.12"))
    assert engine.pod_identity[PodKey("y", "b")] == engine.pod_identity[PodKey("y", "b2")]
    assert _allowed(engine, "x/a", "y/b", 80) == (True, True)
    fresh = engine.recompute_all()
    assert fresh == {n: engine.compiled[n] for n in fresh}


def test_a_full_load_splits_like_updates(e2e: Any) -> None:
    from tests.operator.engine.conftest import NAMESPACES, PODS

    pods = [e2e.pod(ns, p) for ns in NAMESPACES for p in PODS] + [_twin_pod(e2e, "b2", "10.1.1.11")]
    policy = _egress_cidr("p", "10.0.0.0/8", [f"{Y_B}/32"])
    engine = Engine()
    engine.load(namespaces=[e2e.namespace(n) for n in NAMESPACES], pods=pods, policies=[policy])
    assert engine.pod_identity[PodKey("y", "b")] != engine.pod_identity[PodKey("y", "b2")]
    assert _allowed(engine, "x/a", "y/b", 80) == (False, False)
    assert _allowed(engine, "x/a", "y/b2", 80) == (True, True)


def test_septum_cidr_peers_never_select_pods(e2e: Any) -> None:
    """Cilium's rule for Septum's own policies: toCIDR holding a pod IP does not select it."""
    engine = e2e.build()
    engine.upsert_policy(_septum_policy({"egress": [{"toCIDR": [f"{Y_B}/32"]}]}))
    _check(e2e, engine, e2e.Reach().all_egress("x/a", False))
    assert not any(engine.pod_labels(k).has(ADDRESS_BLOCKS_KEY) for k in engine.pods)


# ---- named ports resolve against the destination pod's own containers -------------------


def _http_port(number: int) -> list[dict[str, Any]]:
    return [{"name": "serve-80-tcp", "containerPort": number, "protocol": "TCP"}]


def test_upstream_ingress_on_one_named_port(e2e: Any) -> None:
    """e2e: "should allow ingress access on one named port" (TCP 80 by name, 81 denied)."""
    engine = e2e.build()
    rule = {"ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}
    engine.upsert_policy(np("allow-all-ingress-on-named-port", "x", {}, ingress=[rule]))
    _check(e2e, engine, e2e.Reach())
    closed = e2e.Reach().peer((None, None), ("x", None), False)
    assert not e2e.mismatches(engine, closed, 81, "TCP")


def test_ingress_named_port_resolves_per_destination_pod(e2e: Any) -> None:
    """A rollout renumbers serve-80-tcp from 80 to 8080: each pod accepts only its own."""
    engine = e2e.build()
    engine.upsert_pod(_twin_pod(e2e, "b", Y_B, _http_port(80)))
    engine.upsert_pod(_twin_pod(e2e, "b2", "10.1.1.11", _http_port(8080)))
    rule = {"ports": [{"port": "serve-80-tcp"}]}
    engine.upsert_policy(np("p", "y", labels(pod="b"), ingress=[rule]))
    assert _allowed(engine, "x/a", "y/b", 80) == (True, True)
    assert _allowed(engine, "x/a", "y/b", 8080) == (False, False)
    assert _allowed(engine, "x/a", "y/b2", 8080) == (True, True)
    assert _allowed(engine, "x/a", "y/b2", 80) == (False, False)
    # The old pod goes: the new one keeps its own port and no other.
    engine.delete_pod("y", "b")
    assert _allowed(engine, "x/a", "y/b2", 8080) == (True, True)
    assert _allowed(engine, "x/a", "y/b2", 80) == (False, False)
    fresh = engine.recompute_all()
    assert fresh == {n: engine.compiled[n] for n in fresh}


def test_egress_named_port_resolves_per_destination_pod(e2e: Any) -> None:
    """Egress to peers of one label set that name the port differently: each peer on its own."""
    engine = e2e.build()
    engine.upsert_pod(_twin_pod(e2e, "b", Y_B, _http_port(80)))
    engine.upsert_pod(_twin_pod(e2e, "b2", "10.1.1.11", _http_port(8080)))
    to_b = {"to": [{"podSelector": labels(pod="b"), "namespaceSelector": ns_is("y")}]}
    engine.upsert_policy(
        np("p", "x", POD_A, egress=[{**to_b, "ports": [{"port": "serve-80-tcp"}]}])
    )
    assert _allowed(engine, "x/a", "y/b", 80) == (True, True)
    assert _allowed(engine, "x/a", "y/b", 8080) == (False, False)
    assert _allowed(engine, "x/a", "y/b2", 8080) == (True, True)
    assert _allowed(engine, "x/a", "y/b2", 80) == (False, False)
    b, b2 = engine.pod_identity[PodKey("y", "b")], engine.pod_identity[PodKey("y", "b2")]
    assert b != b2
    fresh = engine.recompute_all()
    assert fresh == {n: engine.compiled[n] for n in fresh}


def test_pods_naming_ports_alike_share_the_label_sets_identity(e2e: Any) -> None:
    engine = e2e.build()
    before = engine.pod_identity[PodKey("y", "b")]
    engine.upsert_pod(_twin_pod(e2e, "b2", "10.1.1.11"))
    assert engine.pod_identity[PodKey("y", "b2")] == before < LOCAL_IDENTITY_MIN


def test_cluster_network_policy_pods_peer_on_a_filtered_key(e2e: Any) -> None:
    """network-policy-api's conformance: an Admin Deny from one StatefulSet pod by name."""
    engine = _stateful_pair(e2e)
    by_name = {"namespaceSelector": {}, "podSelector": labels(**{POD_NAME: "web-0"})}
    subject = {"pods": {"namespaceSelector": {}, "podSelector": labels(pod="c")}}
    deny = {"action": "Deny", "from": [{"pods": by_name}]}
    policy = cnp("c", "Admin", 10, subject, ingress=[deny])
    engine.upsert_policy(policy)
    _check(e2e, engine, e2e.Reach().peer(("x", "a"), (None, "c"), False))
