"""Audit mode in the engine: per pod, per namespace (label or annotation) and per policy.

An audited deny is an entry with `audit=True` (the datapath reports it as AUDIT and
forwards); incremental diffs, a full compile and explain agree on it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from septum.operator.engine.cluster import AUDIT_ANNOTATION, PodKey, parse_namespace, parse_pod
from septum.operator.engine.entries import PolicyEntry, Verdict
from septum.operator.engine.explain import explain
from septum.operator.engine.parse import parse_policy, policy_key
from septum.operator.engine.registry import Origin
from septum.operator.engine.state import Engine, apply_diff

from .conftest import namespace_obj, pod_obj

SERVER = PodKey("x", "a")


def metadata(name: str, audit: str | None) -> dict[str, Any]:
    """A policy's metadata in namespace x, with the audit annotation set to `audit`."""
    annotations = {} if audit is None else {AUDIT_ANNOTATION: audit}
    return {"name": name, "namespace": "x", "annotations": annotations}


def deny_all(name: str, audit: str | None = None) -> dict[str, Any]:
    """A NetworkPolicy isolating x/a for ingress with no allow (a default deny)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, audit),
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"]},
    }


def deny_from_b(name: str, audit: str | None = None) -> dict[str, Any]:
    """A SeptumNetworkPolicy with an explicit ingress deny of pod b to x/a."""
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": metadata(name, audit),
        "spec": {
            "endpointSelector": {"matchLabels": {"pod": "a"}},
            "ingressDeny": [{"fromEndpoints": [{"matchLabels": {"pod": "b"}}]}],
        },
    }


def engine_with(policies: list[dict[str, Any]], ns_labels: dict[str, str] | None = None) -> Engine:
    engine = Engine()
    engine.load(
        namespaces=[namespace_obj("x", ns_labels), namespace_obj("y")],
        pods=[pod_obj(ns, pod) for ns in ("x", "y") for pod in ("a", "b")],
        policies=policies,
    )
    return engine


def denies(engine: Engine, key: PodKey = SERVER) -> list[PolicyEntry]:
    policy = engine.endpoint_policy(key)
    return [e for e in policy.ingress.entries if e.verdict is Verdict.DENY]


def policy_of(engine: Engine, entry: PolicyEntry) -> set[str]:
    info = engine.registry.info(entry.rule_id)
    if info.origin is Origin.DEFAULT_DENY:
        return {p.name for p in info.isolated_by}
    assert info.ref is not None
    return {info.ref.policy.name}


@pytest.mark.parametrize("value", ["enabled", "true", "Enabled", "TRUE"])
def test_audit_values_enabled_and_true(value: str) -> None:
    assert parse_policy(deny_all("p", value)).audit
    assert parse_namespace({"metadata": {"name": "n", "labels": {AUDIT_ANNOTATION: value}}}).audit
    pod = pod_obj("x", "a")
    pod["metadata"]["annotations"] = {AUDIT_ANNOTATION: value}
    assert parse_pod(pod).audit


@pytest.mark.parametrize("value", ["", "disabled", "false", "yes"])
def test_other_values_leave_audit_off(value: str) -> None:
    assert not parse_policy(deny_all("p", value)).audit
    assert not parse_namespace(
        {"metadata": {"name": "n", "labels": {AUDIT_ANNOTATION: value}}}
    ).audit


def test_namespace_label_audits_every_entry_of_its_pods() -> None:
    engine = engine_with([deny_all("d")], {AUDIT_ANNOTATION: "enabled"})
    policy = engine.endpoint_policy(SERVER)
    assert policy.audit
    assert denies(engine) and all(e.audit for e in denies(engine))
    assert not engine.endpoint_policy(PodKey("y", "a")).audit


def test_audited_policy_audits_only_its_own_denies() -> None:
    engine = engine_with([deny_from_b("audited", "enabled"), deny_all("strict")])
    found = denies(engine)
    explicit = [e for e in found if policy_of(engine, e) == {"audited"}]
    default = [e for e in found if "strict" in policy_of(engine, e)]
    assert explicit and all(e.audit for e in explicit)
    # the non-audited policy isolates too: the default deny (of both) still drops
    assert default and not any(e.audit for e in default)
    assert not engine.endpoint_policy(SERVER).audit


def test_default_deny_audits_only_when_every_isolating_policy_audits() -> None:
    engine = engine_with([deny_all("one", "enabled"), deny_all("two", "enabled")])
    assert denies(engine) and all(e.audit for e in denies(engine))
    engine.upsert_policy(deny_all("two"))
    assert denies(engine) and not any(e.audit for e in denies(engine))


def test_toggling_a_policy_annotation_reports_the_diff() -> None:
    engine = engine_with([deny_from_b("p"), deny_all("q", "enabled")])
    view = {key: engine.endpoint_policy(key).entries() for key in engine.endpoints()}
    for audit in ("enabled", None, "true"):
        apply_diff(view, engine.upsert_policy(deny_from_b("p", audit)))
        apply_diff(view, engine.upsert_policy(deny_all("q", audit)))
        for key in engine.endpoints():
            assert view[key] == engine.endpoint_policy(key).entries(), (audit, key)
        assert all(e.audit is (audit is not None) for e in denies(engine))
    reference = engine.recompute_all()
    number = engine.pod_identity[SERVER]
    assert reference[number].entries() == engine.compiled[number].entries()


def test_a_new_peer_identity_gets_audited_entries() -> None:
    """Peer patches and twin clones keep the audit flag of the rule they copy."""
    engine = engine_with([deny_from_b("p", "enabled")])
    view = {key: engine.endpoint_policy(key).entries() for key in engine.endpoints()}
    for name, labels in (("b2", {"pod": "b", "extra": "1"}), ("b3", {"pod": "b", "extra": "2"})):
        obj = pod_obj("x", name)
        obj["metadata"]["labels"] = labels
        obj["status"]["podIP"] = f"10.1.{len(view)}.99"
        apply_diff(view, engine.upsert_pod(obj))
    assert view[SERVER] == engine.endpoint_policy(SERVER).entries()
    peers = {e.peer_identity for e in denies(engine)}
    assert len(peers) >= 3 and all(e.audit for e in denies(engine))


def test_explain_names_the_audited_policy() -> None:
    engine = engine_with([deny_from_b("p", "enabled")])
    result = explain(engine, "x/b", "x/a", 80, "TCP")
    assert result.ingress is not None and not result.ingress.allowed
    assert result.ingress.audit and result.ingress.policy == policy_key(deny_from_b("p"))
    assert result.audited and "DENIED (audit mode: forwarded)" in result.summary()
    entries = [e for e in denies(engine) if e.rule_id == result.ingress.rule_id]
    assert entries and all(e.audit for e in entries)
    plain = engine_with([deny_from_b("p")])
    verdict = explain(plain, "x/b", "x/a", 80, "TCP").ingress
    assert verdict is not None and not verdict.audit


def test_explain_reports_an_audited_namespace() -> None:
    engine = engine_with([deny_all("d")], {AUDIT_ANNOTATION: "enabled"})
    result = explain(engine, "y/b", "x/a", 80, "TCP")
    assert result.ingress is not None and result.ingress.audit and result.audited
    assert all(e.audit for e in denies(engine))
    engine.upsert_namespace(namespace_obj("x"))
    result = explain(engine, "y/b", "x/a", 80, "TCP")
    assert result.ingress is not None and not result.ingress.audit and not result.audited
    assert not any(e.audit for e in denies(engine))


def test_what_if_copy_keeps_audit() -> None:
    engine = engine_with([deny_from_b("p", "enabled")])
    clone = copy.deepcopy(engine)
    assert all(e.audit for e in denies(clone))
