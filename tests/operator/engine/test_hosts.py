"""Host endpoints: selected by nodeSelector policies only, recompiled and diffed per update."""

from __future__ import annotations

from septum.operator.engine.cluster import HostKey
from septum.operator.engine.state import Engine

NODE = {"metadata": {"name": "n1", "labels": {"role": "edge"}}}
HOST_POLICY = {
    "apiVersion": "septum.io/v1alpha1",
    "kind": "SeptumClusterwideNetworkPolicy",
    "metadata": {"name": "h"},
    "spec": {"nodeSelector": {"matchLabels": {"role": "edge"}}, "ingress": [{}]},
}


def test_host_is_unenforced_until_a_node_selector_policy_selects_it() -> None:
    engine = Engine()
    engine.upsert_node(NODE)
    assert engine.host_parts("n1") == []
    assert not engine.endpoint_policy(HostKey("n1")).ingress.enforced
    changes = engine.upsert_policy(HOST_POLICY)
    assert HostKey("n1") in changes.endpoints
    assert [policy.key.name for policy, _ in engine.host_parts("n1")] == ["h"]
    assert engine.endpoint_policy(HostKey("n1")).ingress.enforced
    assert engine.recompute_hosts()["n1"].entries() == engine.host_compiled["n1"].entries()


def test_a_deleted_node_is_reported_removed() -> None:
    engine = Engine()
    engine.upsert_node(NODE)
    engine.upsert_policy(HOST_POLICY)
    changes = engine.delete_node("n1")
    assert HostKey("n1") in changes.removed_endpoints
    assert not engine.host_compiled
