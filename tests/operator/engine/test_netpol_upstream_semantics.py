"""NetworkPolicy follows the upstream API where Septum's identities carry more than the pod.

Selectors: a podSelector sees only the pod's own labels and a namespaceSelector only the
namespace's, never the keys Septum adds to identities (namespace, namespace labels, service
account, cluster). Septum's own (Cilium-shaped) policies keep reading those keys.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.engine.test_netpol_e2e_truth_tables import POD_A, expr, labels, np

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
    engine.upsert_policy(
        {
            "apiVersion": "septum.io/v2",
            "kind": "SeptumNetworkPolicy",
            "metadata": {"name": "p", "namespace": "x"},
            "spec": {
                "endpointSelector": {"matchLabels": {"pod": "a"}},
                "ingress": [
                    {"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "y"}}]}
                ],
            },
        }
    )
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
