"""Compiling identities: memoised results are shared and equal a compile from scratch."""

from __future__ import annotations

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.state import Engine


def _pod(name: str, app: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "x", "labels": {"app": app, "id": name}}}


POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "p", "namespace": "x"},
    "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]},
}


def test_identities_selected_by_the_same_rules_share_entries() -> None:
    engine = Engine()
    engine.load(pods=[_pod("a", "web"), _pod("b", "web")], policies=[POLICY])
    first = engine.pod_identity[PodKey("x", "a")]
    second = engine.pod_identity[PodKey("x", "b")]
    assert first != second
    assert engine.compiled[first].ingress is engine.compiled[second].ingress
    assert engine.recompute_all() == {n: engine.compiled[n] for n in (first, second)}
