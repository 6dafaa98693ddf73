"""The Star Wars example's policies, through the policy engine: who may land on the deathstar."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.operator.engine.errors import InvalidPolicy
from septum.operator.engine.explain import explain
from septum.operator.engine.state import Engine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "starwars"
NAMESPACE = "default"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((EXAMPLE / name).read_text()) if d]


def _pods_of_app() -> list[dict[str, Any]]:
    """The pods the app's manifests make, as the API would report them once running."""
    pods: list[dict[str, Any]] = []
    ip = iter(f"10.244.1.{n}" for n in range(10, 250))
    for doc in _documents("app.yaml"):
        if doc["kind"] == "Pod":
            pods.append(copy.deepcopy(doc))
        elif doc["kind"] == "Deployment":
            for i in range(doc["spec"]["replicas"]):
                template = copy.deepcopy(doc["spec"]["template"])
                template["metadata"]["name"] = f"{doc['metadata']['name']}-{i}"
                pods.append({"apiVersion": "v1", "kind": "Pod", **template})
    for pod in pods:
        pod["metadata"]["namespace"] = NAMESPACE
        address = next(ip)
        pod["status"] = {"phase": "Running", "podIP": address, "podIPs": [{"ip": address}]}
        pod["spec"]["nodeName"] = "node1"
    return pods


def _engine_with(policy_file: str | None) -> Engine:
    engine = Engine()
    engine.upsert_namespace(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {}}}
    )
    for pod in _pods_of_app():
        engine.upsert_pod(pod)
    if policy_file:
        for doc in _documents(policy_file):
            engine.upsert_policy(doc)
    return engine


def test_without_policy_every_ship_lands() -> None:
    engine = _engine_with(None)
    for ship in ("tiefighter", "xwing"):
        verdict = explain(engine, f"{NAMESPACE}/{ship}", f"{NAMESPACE}/deathstar-0", 80, "TCP")
        assert verdict.allowed, verdict.summary()
        assert verdict.ingress is not None and "no policy selects" in verdict.ingress.reason


@pytest.mark.parametrize("policy_file", ["policy-l3-l4.yaml", "policy-l7.yaml"])
def test_only_the_empire_lands(policy_file: str) -> None:
    engine = _engine_with(policy_file)
    tie = explain(engine, f"{NAMESPACE}/tiefighter", f"{NAMESPACE}/deathstar-1", 80, "TCP")
    assert tie.allowed, tie.summary()
    assert tie.ingress is not None and tie.ingress.policy is not None
    assert tie.ingress.policy.name == "rule1"
    assert tie.ingress.l7 is (policy_file == "policy-l7.yaml")

    xwing = explain(engine, f"{NAMESPACE}/xwing", f"{NAMESPACE}/deathstar-0", 80, "TCP")
    assert not xwing.allowed, xwing.summary()
    assert xwing.ingress is not None
    # Default-deny attribution: the policy that isolates the deathstar is named.
    assert "default deny" in xwing.ingress.reason and "rule1" in xwing.ingress.reason

    other_port = explain(engine, f"{NAMESPACE}/tiefighter", f"{NAMESPACE}/deathstar-0", 81, "TCP")
    assert not other_port.allowed, other_port.summary()
    # The policy selects only the deathstar: the ships themselves stay open.
    back = explain(engine, f"{NAMESPACE}/deathstar-0", f"{NAMESPACE}/xwing", 80, "TCP")
    assert back.allowed, back.summary()


def test_a_cilium_policy_ports_by_changing_api_version_and_kind() -> None:
    (policy,) = _documents("policy-l3-l4.yaml")
    cilium = {**policy, "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy"}
    ported = {**cilium, "apiVersion": "septum.io/v2", "kind": "SeptumNetworkPolicy"}
    engine = _engine_with(None)
    engine.upsert_policy(ported)
    assert not explain(engine, f"{NAMESPACE}/xwing", f"{NAMESPACE}/deathstar-0", 80).allowed


def test_a_broken_edit_keeps_the_previous_policy_in_force() -> None:
    engine = _engine_with("policy-l3-l4.yaml")
    (policy,) = _documents("policy-l3-l4.yaml")
    broken = copy.deepcopy(policy)
    broken["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"] = "70000"
    with pytest.raises(InvalidPolicy, match=r"spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.port"):
        engine.upsert_policy(broken)
    assert not explain(engine, f"{NAMESPACE}/xwing", f"{NAMESPACE}/deathstar-0", 80).allowed
    assert explain(engine, f"{NAMESPACE}/tiefighter", f"{NAMESPACE}/deathstar-0", 80).allowed
