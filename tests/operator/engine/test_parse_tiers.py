"""ClusterNetworkPolicy `pods` selectors (NamespacedPod): `namespaceSelector` may be omitted and
then selects every namespace, as network-policy-api v0.3.0 defines it and its conformance suite
(`CNPAdminTierPodSelector`, policy `pod-selector-rules`) uses it."""

from __future__ import annotations

from typing import Any

import pytest

from septum.operator.engine.errors import PolicyError
from septum.operator.engine.explain import explain
from septum.operator.engine.parse_tiers import parse_cluster_network_policy
from septum.operator.engine.ports import PROTO_TCP
from septum.operator.engine.state import Engine


def _cluster() -> Engine:
    engine = Engine()
    namespaces = [{"metadata": {"name": ns, "labels": {"house": ns}}} for ns in ("g", "r", "s")]
    pods = [
        {
            "metadata": {"name": f"{ns}{i}", "namespace": ns, "labels": {"house": ns}},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": f"10.244.{n}.{10 + i}"},
        }
        for n, ns in enumerate(("g", "r", "s"))
        for i in (0, 1)
    ]
    engine.load(namespaces=namespaces, pods=pods)
    return engine


def _by_label(house: str) -> dict[str, Any]:
    return {"pods": {"podSelector": {"matchLabels": {"house": house}}}}


def test_a_subject_and_a_peer_by_pod_label_alone_span_every_namespace() -> None:
    engine = _cluster()
    engine.upsert_policy(
        {
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "pod-selector-rules"},
            "spec": {
                "tier": "Admin",
                "priority": 20,
                "subject": _by_label("g"),
                "egress": [{"name": "deny-r", "action": "Deny", "to": [_by_label("r")]}],
            },
        }
    )
    assert not explain(engine, "g/g0", "r/r1", 80, PROTO_TCP).allowed
    assert not explain(engine, "g/g1", "r/r0", 80, PROTO_TCP).allowed
    assert explain(engine, "g/g0", "s/s0", 80, PROTO_TCP).allowed
    assert explain(engine, "s/s0", "r/r0", 80, PROTO_TCP).allowed  # s is no subject


def test_pod_selector_is_still_required() -> None:
    spec = {"tier": "Admin", "priority": 1, "subject": {"pods": {"namespaceSelector": {}}}}
    with pytest.raises(PolicyError, match=r"spec\.subject\.pods\.podSelector"):
        parse_cluster_network_policy({"spec": spec}, "p")
