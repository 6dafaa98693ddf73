"""`septum policy validate` and `septum policy explain` over YAML manifests."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from septum.cli.policy import policy

from .clusterdata import CLUSTER

MANIFESTS = CLUSTER  # namespace, two pods, one NetworkPolicy (tests/cli/clusterdata.py)

BROKEN = """
apiVersion: septum.io/v1alpha1
kind: SeptumNetworkPolicy
metadata: {name: bad, namespace: shop}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "80"}]}, {ports: [{port: "70000"}]}]
"""


def test_validate_names_the_field(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(MANIFESTS)
    bad.write_text(BROKEN)
    result = CliRunner().invoke(policy, ["validate", "-f", str(good), "-f", str(bad)])
    assert result.exit_code == 1
    assert "spec.ingress[0].toPorts[1].ports[0].port: 70000 is out of range" in result.output
    assert "1 valid, 1 invalid" in result.output


def test_explain(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFESTS)
    ok = CliRunner().invoke(
        policy,
        ["explain", "-f", str(path), "--from", "shop/web", "--to", "shop/db", "--port", "5432"],
    )
    assert ok.exit_code == 0, ok.output
    assert "allow by policy tier: NetworkPolicy shop/db-from-web spec.ingress[0]" in ok.output
    denied = CliRunner().invoke(
        policy,
        [
            "explain",
            "-f",
            str(path),
            "--from",
            "shop:app=other",
            "--to",
            "10.0.0.2",
            "--port",
            "5432",
        ],
    )
    assert denied.exit_code == 1
    assert "default deny: NetworkPolicy shop/db-from-web selects the destination" in denied.output


HOSTS = """
apiVersion: v1
kind: Node
metadata: {name: edge-1, labels: {role: edge}}
status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
---
apiVersion: septum.io/v1alpha1
kind: SeptumClusterwideNetworkPolicy
metadata: {name: host-ssh}
spec:
  nodeSelector: {matchLabels: {role: edge}}
  ingress:
  - fromEntities: [cluster]
    toPorts: [{ports: [{port: "22", protocol: TCP}]}]
"""


def test_explain_host_endpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MANIFESTS + "---" + HOSTS)

    def run(source: str, destination: str, port: str) -> tuple[int, str]:
        args = ["explain", "-f", str(path), "--from", source, "--to", destination]
        result = CliRunner().invoke(policy, [*args, "--port", port])
        return result.exit_code, result.output

    code, output = run("shop/web", "host:edge-1", "22")
    assert code == 0, output
    assert "-> host:edge-1 TCP/22" in output
    assert "SeptumClusterwideNetworkPolicy host-ssh spec.ingress[0]" in output
    code, output = run("192.0.2.7", "host:edge-1", "22")
    assert code == 1
    assert "default deny: SeptumClusterwideNetworkPolicy host-ssh selects the destination" in output
    code, output = run("host:edge-1", "192.0.2.7", "443")
    assert code == 0, output
    code, output = run("host:nope", "shop/web", "80")
    assert code == 2 and "host:nope: no such node" in output
