"""The operator's cluster view: label sets per pod and selected-endpoint counts."""

from __future__ import annotations

from typing import Any

from septum.operator.cache import ClusterCache, selected_endpoints
from septum.operator.engine import parse_policy


def pod(ns: str, name: str, labels: dict[str, str], host: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"hostNetwork": host, "serviceAccountName": "default"},
    }


def namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}}


def test_pods_of_one_deployment_share_a_label_set_and_unknown_namespaces_wait() -> None:
    cache = ClusterCache()
    cache.pod_event(None, pod("a", "w1", {"app": "web", "pod-template-hash": "1"}))
    assert not cache.label_set_counts()  # namespace a not seen yet: no identity asked for
    cache.namespace_event(None, namespace("a"))
    cache.pod_event(None, pod("a", "w2", {"app": "web", "pod-template-hash": "2"}))
    cache.pod_event(None, pod("a", "h", {"app": "web"}, host=True))
    assert list(cache.label_set_counts().values()) == [2]
    cache.pod_event("DELETED", pod("a", "w1", {}))
    assert list(cache.label_set_counts().values()) == [1]


def test_selected_endpoints_counts_pods_in_the_policy_namespace() -> None:
    cache = ClusterCache()
    for ns in ("a", "b"):
        cache.namespace_event(None, namespace(ns))
        for i in range(3):
            cache.pod_event(None, pod(ns, f"w{i}", {"app": "web" if i else "db"}))
    policy = parse_policy(
        {
            "apiVersion": "septum.io/v2",
            "kind": "SeptumNetworkPolicy",
            "metadata": {"name": "p", "namespace": "a"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "web"}}},
        }
    )
    assert selected_endpoints(policy, cache.label_set_counts(), cache.nodes) == 2
