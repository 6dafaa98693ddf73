"""What-if: candidate changes are evaluated without touching the live engine."""

from __future__ import annotations

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.parse import policy_key
from septum.operator.engine.state import Engine
from septum.operator.engine.whatif import Apply, Delete, Flow, what_if


def _engine() -> Engine:
    engine = Engine()
    engine.load(
        namespaces=[{"metadata": {"name": "x"}}],
        pods=[
            {
                "metadata": {"name": n, "namespace": "x", "labels": {"app": n}},
                "status": {"podIP": f"10.0.0.{i + 1}"},
            }
            for i, n in enumerate(("a", "b", "c"))
        ],
    )
    return engine


DENY_A = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "only-b", "namespace": "x"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
    },
}


def test_reports_changed_verdicts_and_diffs_without_applying() -> None:
    engine = _engine()
    flows = [Flow("x/b", "x/a", 80), Flow("x/c", "x/a", 80), Flow("x/a", "x/c", 80)]
    report = what_if(engine, [Apply(DENY_A)], flows)
    assert [f.flow.source for f in report.changed_flows] == ["x/c"]
    assert "default deny: NetworkPolicy x/only-b" in report.changed_flows[0].after.summary()
    assert set(report.endpoint_diffs) == {PodKey("x", "a")}
    assert not engine.policies  # nothing applied


def test_delete_and_rejected_candidates() -> None:
    engine = _engine()
    engine.upsert_policy(DENY_A)
    broken = {
        **DENY_A,
        "metadata": {"name": "broken", "namespace": "x"},
        "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}},
    }
    report = what_if(engine, [Delete(policy_key(DENY_A)), Apply(broken)], [Flow("x/c", "x/a", 80)])
    assert report.changed_flows and report.changed_flows[0].after.allowed
    assert (
        "spec.podSelector.matchExpressions[0].operator" in report.rejected["NetworkPolicy x/broken"]
    )
    assert engine.policies


def test_what_if_on_an_engine_that_already_has_policies() -> None:
    """The candidate is a deep copy: its rules are new objects, and the rule resolver's caches
    (keyed by rule identity) must follow them (a KeyError once broke every live what-if)."""
    engine = _engine()
    engine.upsert_policy(DENY_A)
    allow_c = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "also-c", "namespace": "x"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "c"}}}]}],
        },
    }
    flow = Flow(source="x/c", destination="x/a", port=80)
    report = what_if(engine, [Apply(allow_c)], [flow])
    assert report.rejected == {}
    assert PodKey("x", "a") in report.endpoint_diffs
    assert [change.changed for change in report.flows] == [True]
