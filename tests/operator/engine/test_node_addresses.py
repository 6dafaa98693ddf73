"""Node addresses in ipBlocks and admin `networks` (upstream: a CIDR matches every address in
it, nodes and host-network pods included).

A node's addresses keep the `host` (this engine's node) or `remote-node` identity; a
NetworkPolicy ipBlock (or an admin-tier `networks` CIDR) matches one of these identities when
it holds every address the identity stands for (exact when a block holds all node addresses
or none). An admin `Deny` matches when it holds any of them (never more permissive than
upstream).
"""

from __future__ import annotations

from typing import Any

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.explain import explain
from septum.operator.engine.state import Engine
from septum.wellknown.reserved import ReservedIdentity
from tests.operator.engine.conftest import NAMESPACES, PODS, namespace_obj, pod_obj
from tests.operator.engine.test_netpol_e2e_truth_tables import POD_A, np

HOST = int(ReservedIdentity.HOST)
REMOTE = int(ReservedIdentity.REMOTE_NODE)
X_A = PodKey("x", "a")
N1, N2, N3 = "192.168.0.1", "192.168.0.2", "192.168.0.3"  # n1 is the engine's own node


def node(name: str, *ips: str) -> dict[str, Any]:
    addresses = [{"type": "InternalIP", "address": ip} for ip in ips]
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux"}},
        "status": {"addresses": addresses},
    }


def build(policies: list[dict[str, Any]] | None = None) -> Engine:
    engine = Engine(local_node="n1")
    engine.load(
        namespaces=[namespace_obj(ns) for ns in NAMESPACES],
        pods=[pod_obj(ns, pod) for ns in NAMESPACES for pod in PODS],
        nodes=[node("n1", N1), node("n2", N2), node("n3", N3)],
        policies=policies or [],
    )
    return engine


def egress_to(cidr: str, excepts: list[str] | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    if excepts:
        block["except"] = excepts
    return np("p", "x", POD_A, egress=[{"to": [{"ipBlock": block}]}], types=["Egress"])


def egress_allows(engine: Engine, peer: int) -> bool:
    entry = engine.endpoint_policy(X_A).egress.lookup(peer, 6, 80)
    return entry is None or entry.verdict.value == "allow"


def explained(engine: Engine, source: str, destination: str) -> bool:
    return explain(engine, source, destination, 80, "TCP").allowed


def check_fresh(engine: Engine) -> None:
    fresh = engine.recompute_all()
    assert fresh == {n: engine.compiled[n] for n in fresh}


def test_an_ip_block_holding_every_node_matches_host_and_remote_nodes() -> None:
    engine = build([egress_to("192.168.0.0/24")])
    assert egress_allows(engine, HOST) and egress_allows(engine, REMOTE)
    assert explained(engine, "x/a", N1) and explained(engine, "x/a", N3)
    # The ipBlock isolates: every other address stays denied.
    assert not egress_allows(engine, engine.pod_identity[PodKey("y", "b")])
    check_fresh(engine)


def test_an_ip_block_holding_no_node_matches_neither() -> None:
    engine = build([egress_to("192.168.0.0/24", ["192.168.0.0/28"])])
    assert not egress_allows(engine, HOST) and not egress_allows(engine, REMOTE)
    assert not explained(engine, "x/a", N2)


def test_an_ip_block_holding_only_the_local_node_matches_host() -> None:
    engine = build([egress_to(f"{N1}/32")])
    assert egress_allows(engine, HOST)
    assert not egress_allows(engine, REMOTE)
    assert explained(engine, "x/a", N1) and not explained(engine, "x/a", N2)


def test_an_ip_block_holding_some_remote_nodes_matches_none_of_them() -> None:
    """Identities do not tell remote nodes apart: an allow is only given when it holds all
    (stricter than upstream for the nodes it holds, never more permissive)."""
    engine = build([egress_to(f"{N2}/32")])
    assert not egress_allows(engine, REMOTE)


def test_ingress_from_nodes_in_an_ip_block() -> None:
    """Kubelets and host-network pods of other nodes reach a pod whose ipBlock holds them."""
    rule = {"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}
    engine = build([np("p", "x", POD_A, ingress=[rule])])
    entry = engine.endpoint_policy(X_A).ingress.lookup(REMOTE, 6, 80)
    assert entry is not None and entry.verdict.value == "allow"
    assert explained(engine, N3, "x/a")


def test_a_new_node_outside_the_block_withdraws_the_match() -> None:
    engine = build([egress_to("192.168.0.0/24")])
    engine.upsert_node(node("n4", "10.99.0.4"))
    assert not egress_allows(engine, REMOTE)
    assert egress_allows(engine, HOST)
    check_fresh(engine)
    engine.delete_node("n4")
    assert egress_allows(engine, REMOTE)
    check_fresh(engine)


def test_a_node_address_moving_into_the_block_adds_the_match() -> None:
    engine = build([egress_to("192.168.0.0/30", ["192.168.0.3/32"])])  # n1, n2, not n3
    assert egress_allows(engine, HOST) and not egress_allows(engine, REMOTE)
    engine.upsert_node(node("n3", "192.168.0.3", "192.168.0.2"))
    assert not egress_allows(engine, REMOTE)
    engine.upsert_node(node("n3", "192.168.0.2"))
    assert egress_allows(engine, REMOTE)
    check_fresh(engine)


def test_septum_cidr_peers_still_never_select_nodes() -> None:
    policy = {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "p", "namespace": "x"},
        "spec": {"endpointSelector": POD_A, "egress": [{"toCIDR": ["192.168.0.0/24"]}]},
    }
    engine = build([policy])
    assert not egress_allows(engine, HOST) and not egress_allows(engine, REMOTE)


def _cnp(action: str, networks: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": "c"},
        "spec": {
            "tier": "Admin",
            "priority": 10,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": POD_A}},
            "egress": [{"action": action, "to": [{"networks": networks}]}],
        },
    }


def test_admin_networks_match_node_addresses() -> None:
    engine = build([_cnp("Deny", ["192.168.0.0/24"])])
    assert not egress_allows(engine, HOST) and not egress_allows(engine, REMOTE)
    assert not explained(engine, "x/a", N2)
    check_fresh(engine)


def test_an_admin_deny_holding_some_remote_nodes_denies_them_all() -> None:
    """A Deny that holds one remote node must not let it through: it denies every remote
    node (stricter than upstream for the others)."""
    engine = build([_cnp("Deny", [f"{N2}/32"])])
    assert not egress_allows(engine, REMOTE)
    assert egress_allows(engine, HOST)
    assert not explained(engine, "x/a", N2)
    # An Accept holding the same one matches none (the connection goes on to later rules).
    engine = build([_cnp("Accept", [f"{N2}/32"]), np("q", "x", POD_A, egress=[], types=["Egress"])])
    assert not egress_allows(engine, REMOTE)
