"""`septum policy explain|diff|what-if` against the live lab cluster.

Pods and a NetworkPolicy in a namespace of our own (`cli-…`, deleted afterwards); what-if
reads flows from a real Observer started in this process (agents' Observers are found from
the Nodes in production; here `--server` names ours), fed flow events between the live pods.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # before grpc: the lab forks

import json  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import yaml  # noqa: E402
from click.testing import CliRunner, Result  # noqa: E402

from septum.cli.policy import policy  # noqa: E402
from septum.dataplane.observe.metadata import EndpointInfo  # noqa: E402
from septum.lab.lab import Lab  # noqa: E402
from septum.lab.pytest_plugin import wait_for  # noqa: E402

from .observer_feed import event, fed_observer  # noqa: E402

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def _pod(namespace: str, name: str, args: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": name, "image": AGNHOST, "args": args}],
        },
    }


def _web_from_client(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-from-client", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"port": 8080}],
                }
            ],
        },
    }


def _deny_client(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "deny-client", "namespace": namespace},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "web"}},
            "ingressDeny": [
                {
                    "fromEndpoints": [{"matchLabels": {"app": "client"}}],
                    "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}],
                }
            ],
        },
    }


@dataclass
class Shop:
    lab: Lab
    namespace: str
    ips: dict[str, str]  # pod name -> IP
    tmp: Path

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(
            policy, [*args[:1], "--kubeconfig", str(self.lab.kubeconfig), *args[1:]]
        )

    def manifest(self, name: str, *objects: dict[str, Any]) -> str:
        path = self.tmp / name
        path.write_text(yaml.safe_dump_all(objects))
        return str(path)


@pytest.fixture(scope="module")
def shop(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        _pod(namespace, "web", ["netexec", "--http-port=8080"]),
        _pod(namespace, "client", ["pause"]),
        _web_from_client(namespace),
    ]
    lab.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(objects))
    try:

        def ips() -> dict[str, str] | None:
            pods = lab.get_json("pods", "-n", namespace)["items"]
            found = {p["metadata"]["name"]: p.get("status", {}).get("podIP") for p in pods}
            return found if len(found) == 2 and all(found.values()) else None

        found = wait_for(f"pods of {namespace} with IPs", ips, 120)
        assert isinstance(found, dict)
        yield Shop(lab, namespace, found, tmp_path_factory.mktemp("cli-policy"))
    finally:
        lab.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_explain_allowed_and_denied_naming_the_policy(shop: Shop) -> None:
    ns = shop.namespace
    allowed = shop.run("explain", "--from", f"{ns}/client", "--to", f"{ns}/web", "--port", "8080")
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stdout.startswith(f"ALLOWED: {ns}/client -> {ns}/web TCP/8080")
    assert f"NetworkPolicy {ns}/web-from-client spec.ingress[0]" in allowed.stdout
    # By IP and by labels (a hypothetical pod) too.
    denied = shop.run(
        "explain", "--from", shop.ips["client"], "--to", shop.ips["web"], "--port", "9090"
    )
    assert denied.exit_code == 1, denied.output
    assert denied.stdout.startswith(f"DENIED: {ns}/client ({shop.ips['client']}) -> {ns}/web")
    assert f"default deny: NetworkPolicy {ns}/web-from-client selects the destination" in (
        denied.stdout
    )
    other = shop.run("explain", "--from", f"{ns}:app=other", "--to", f"{ns}/web", "--port", "8080")
    assert other.exit_code == 1 and "DENIED" in other.stdout


def test_explain_the_cluster_plus_a_candidate(shop: Shop) -> None:
    ns = shop.namespace
    candidate = shop.manifest("deny.yaml", _deny_client(ns))
    result = shop.run(
        "explain", "-f", candidate, "--from", f"{ns}/client", "--to", f"{ns}/web", "--port", "8080"
    )
    assert result.exit_code == 1, result.output
    assert f"deny by policy tier: SeptumNetworkPolicy {ns}/deny-client" in result.stdout


def test_diff_of_a_deny(shop: Shop) -> None:
    ns = shop.namespace
    result = shop.run("diff", "-f", shop.manifest("deny.yaml", _deny_client(ns)))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{ns}/web:"
    assert any(
        line.split()[:5] == ["+", "ingress", f"{ns}/{{app=client}}", "TCP/8080", "deny"]
        and f"SeptumNetworkPolicy {ns}/deny-client spec.ingressDeny[0]" in line
        for line in lines
    ), result.stdout
    assert "1 entries added, 1 removed" in lines[-1]
    as_json = shop.run("diff", "-f", shop.manifest("deny.yaml", _deny_client(ns)), "-o", "json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert [e["endpoint"] for e in body["endpoints"]] == [f"{ns}/web"]


def test_diff_of_no_change(shop: Shop) -> None:
    result = shop.run("diff", "-f", shop.manifest("same.yaml", _web_from_client(shop.namespace)))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("no change: the candidate leaves all ")


def test_what_if_replays_observed_flows(shop: Shop) -> None:
    ns = shop.namespace
    client = EndpointInfo(21, 300, ns, "client", ("k8s:app=client",), ips=(shop.ips["client"],))
    web = EndpointInfo(22, 301, ns, "web", ("k8s:app=web",), ips=(shop.ips["web"],))
    candidate = shop.manifest("deny.yaml", _deny_client(ns))
    with fed_observer(client, web) as observer:
        observer.push(
            event(shop.ips["client"], shop.ips["web"], 8080, endpoint_id=22),
            event(shop.ips["client"], shop.ips["web"], 8080, endpoint_id=22, src_port=40001),
            event(shop.ips["web"], shop.ips["client"], 9000, endpoint_id=21),
        )
        text = shop.run("what-if", "-f", candidate, "--server", observer.server, "--since", "10m")
        as_json = shop.run("what-if", "-f", candidate, "--server", observer.server, "-o", "json")
    assert text.exit_code == 1, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == f"{ns}/client -> {ns}/web TCP/8080: ALLOWED -> DENIED  x2"
    assert f"    candidate: ingress: deny by policy tier: SeptumNetworkPolicy {ns}/deny-client" in (
        text.stdout
    )
    assert lines[-1] == "1 of 2 distinct connections would change (2 of 3 flows)"
    body = json.loads(as_json.stdout)
    assert body["servers"] == {"answered": [observer.server], "failed": {}}
    assert body["changedConnections"][0]["flows"] == 2
