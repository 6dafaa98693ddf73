"""The chart rendered by the real helm (`helm template`, no cluster): what it deploys, how, and
the values it refuses. Marked lab: helm is one of the lab's Go-built binaries."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding

from septum.lab.binaries import locate

pytestmark = pytest.mark.lab

CHART = Path(__file__).resolve().parents[2] / "helm" / "septum"
NS = "kube-system"


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(locate().helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def render(*sets: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = _helm("template", "septum", str(CHART), "-n", NS, *(f"--set={s}" for s in sets))
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_helm_lint_passes() -> None:
    out = _helm("lint", str(CHART), "--strict")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_agent_daemonset_is_what_the_issue_asks() -> None:
    objs = render()
    ds = objs[("DaemonSet", "septum-agent")]
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["tolerations"] == [{"operator": "Exists"}]  # every taint
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}
    }  # fmt: skip
    agent = _container(ds)
    security = agent["securityContext"]
    assert security["privileged"] is False
    assert security["capabilities"] == {
        "drop": ["ALL"], "add": ["BPF", "NET_ADMIN", "SYS_ADMIN", "PERFMON"]
    }  # fmt: skip
    mounts = {m["name"]: m for m in agent["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["bpffs"]["mountPath"] == "/sys/fs/bpf"
    assert volumes["bpffs"]["hostPath"]["path"] == "/sys/fs/bpf"
    assert volumes["cni-conf"]["hostPath"]["path"] == "/etc/cni/net.d"
    assert volumes["tls"]["secret"]["secretName"] == "septum-agent-tls"
    args = agent["args"]
    assert args[0] == "agent" and "--node=$(NODE_NAME)" in args
    assert "--observer-tls-client-ca-file=/etc/septum/tls/ca.crt" in args  # mutual TLS
    assert "--owner-daemonset=$(POD_NAMESPACE)/septum-agent" in args


def test_the_operator_runs_two_replicas_with_leader_election_on_different_nodes() -> None:
    dep = render()[("Deployment", "septum-operator")]
    assert dep["spec"]["replicas"] == 2
    args = _container(dep)["args"]
    assert "--leader-elect" in args and "--namespace=$(POD_NAMESPACE)" in args
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == (
        "kubernetes.io/hostname"
    )


def test_the_relay_dials_the_agents_with_mutual_tls_by_default_and_plaintext_when_chosen() -> None:
    relay = _container(render()[("Deployment", "septum-relay")])
    assert f"--peer-service=septum-peer.{NS}.svc.cluster.local:4244" in relay["args"]
    assert "--agent-client-cert=/etc/septum/agent-tls/tls.crt" in relay["args"]
    assert "--insecure-agents" not in relay["args"]
    plain = render("tls.enabled=false")
    assert "--insecure-agents" in _container(plain[("Deployment", "septum-relay")])["args"]
    assert "--observer-insecure" in _container(plain[("DaemonSet", "septum-agent")])["args"]
    assert ("Secret", "septum-ca") not in plain
    service = render()[("Service", "septum-relay")]
    assert service["spec"]["ports"][0]["port"] == 80
    peer = render()[("Service", "septum-peer")]
    assert peer["spec"]["internalTrafficPolicy"] == "Local"


def test_the_certificates_chain_to_one_ca_and_name_what_the_relay_verifies() -> None:
    objs = render()

    def cert(name: str, key: str = "tls.crt") -> x509.Certificate:
        return x509.load_pem_x509_certificate(base64.b64decode(objs[("Secret", name)]["data"][key]))

    ca = cert("septum-ca", "ca.crt")
    agent = cert("septum-agent-tls")
    client = cert("septum-relay-client-tls")
    for leaf in (agent, client):
        assert leaf.issuer == ca.subject
        ca.public_key().verify(  # type: ignore[union-attr]
            leaf.signature, leaf.tbs_certificate_bytes, *_verify_args(leaf)
        )
    names = agent.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    assert "*.default.hubble-grpc.septum.io" in dns
    assert f"septum-peer.{NS}.svc.cluster.local" in dns


def _verify_args(cert: Any) -> tuple[Any, ...]:
    if isinstance(cert.public_key(), ec.EllipticCurvePublicKey):
        return (ec.ECDSA(cert.signature_hash_algorithm),)
    return (padding.PKCS1v15(), cert.signature_hash_algorithm)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("agnet.observerPort=4244", "agnet"),  # a misspelt key
        ("agent.observerPort=0", "/agent/observerPort"),
        ("agent.allowLocalhost=sometimes", "/agent/allowLocalhost"),
        ("agent.capabilities={NET_ADMIN,ALL}", "/agent/capabilities/1"),
        ("operator.identityGcInterval=soon", "/operator/identityGcInterval"),
        ("clusterName=Not_A_Label", "/clusterName"),
        ("relay.service.type=Ingress", "/relay/service/type"),
        ("tls.validityDays=0", "/tls/validityDays"),
        ("bpf.hostLegacyRouting=maybe", "/bpf/hostLegacyRouting"),
    ],
)
def test_bad_values_are_refused_naming_the_key(value: str, named: str) -> None:
    out = _helm("template", "septum", str(CHART), f"--set={value}")
    assert out.returncode != 0
    assert named in out.stderr, out.stderr


def test_optional_parts_follow_their_values() -> None:
    objs = render(
        "relay.enabled=false",
        "agent.hostFirewall.enabled=true",
        "agent.hostFirewall.interfaces={eth0}",
        "agent.flowHistory.enabled=true",
        "agent.l7Proxy.enabled=true",
    )
    assert ("Deployment", "septum-relay") not in objs
    args = _container(objs[("DaemonSet", "septum-agent")])["args"]
    assert "--host-firewall" in args and "--host-interface=eth0" in args
    assert "--l7-proxy" in args
    assert "--tofqdns-min-ttl=0" in args
    assert "--tofqdns-endpoint-max-ip-per-hostname=1000" in args
    assert "--tofqdns-idle-connection-grace-period=0s" in args
    # On by default, as Cilium's l7Proxy; off when asked.
    assert "--l7-proxy" in _container(render()[("DaemonSet", "septum-agent")])["args"]
    off = render("agent.l7Proxy.enabled=false")[("DaemonSet", "septum-agent")]
    assert "--l7-proxy" not in _container(off)["args"]
    assert "--flow-history-dir=/var/lib/septum/$(NODE_NAME)/history" in args


def test_local_delivery_is_on_unless_legacy_host_routing_is_asked_for() -> None:
    # Cilium's value name: bpf.hostLegacyRouting, false by default
    assert (
        "--host-legacy-routing" not in _container(render()[("DaemonSet", "septum-agent")])["args"]
    )
    legacy = render("bpf.hostLegacyRouting=true")[("DaemonSet", "septum-agent")]
    assert "--host-legacy-routing" in _container(legacy)["args"]


def test_flow_exports_render_to_flags_the_agent_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _helm(
        "template", "septum", str(CHART), "-n", NS,
        "--set=agent.flowExport.file.enabled=true",
        "--set=agent.flowExport.file.maxBackups=2",
        "--set=agent.flowExport.otlp.endpoint=otel-collector.observability:4317",
        '--set-json=agent.flowExport.otlp.headers=["authorization=Bearer t0ken"]',
        '--set-json=agent.flowExport.allowlist=[{"verdict":["DROPPED"]},{"source_pod":["shop/"]}]',
        '--set-json=agent.flowExport.fieldMask=["time","verdict","source.pod_name"]',
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}
    args = _container(docs[("DaemonSet", "septum-agent")])["args"]
    exports = [a for a in args if a.startswith("--flow-export")]
    assert "--flow-export-file=/var/lib/septum/$(NODE_NAME)/flows/flows.log" in exports
    # The agent's own parser takes exactly what the chart renders.
    import septum.agent.daemon as daemon
    from septum.cli import agent as agent_cli

    seen: list[Any] = []
    monkeypatch.setattr(daemon, "run", lambda options: seen.append(options) or 0)
    node_args = [a.replace("$(NODE_NAME)", "n1") for a in exports]
    result = CliRunner().invoke(agent_cli.agent, ["--node", "n1", *node_args])
    assert result.exit_code == 0, result.output
    file, otlp = seen[0].flow_exports
    assert str(file.path) == "/var/lib/septum/n1/flows/flows.log" and file.max_backups == 2
    assert otlp.endpoint == "otel-collector.observability:4317"
    assert otlp.headers == (("authorization", "Bearer t0ken"),)
    assert len(otlp.allow) == 2 and tuple(otlp.field_mask) == ("time", "verdict", "source.pod_name")
    # Off by default: no export flag at all.
    default_args = _container(render()[("DaemonSet", "septum-agent")])["args"]
    assert not [a for a in default_args if a.startswith("--flow-export")]


def test_flow_history_on_a_clickhouse_server_takes_its_password_from_a_secret() -> None:
    objs = render(
        "agent.flowHistory.server.url=https://clickhouse.observability:8443",
        "agent.flowHistory.server.createTables=false",
        "agent.flowHistory.server.passwordSecret.name=clickhouse-septum",
    )
    container = _container(objs[("DaemonSet", "septum-agent")])
    args = container["args"]
    assert "--flow-history-server=https://clickhouse.observability:8443" in args
    assert "--no-flow-history-server-create-tables" in args
    assert not [a for a in args if a.startswith("--flow-history-dir")]
    password = [e for e in container["env"] if e["name"] == "SEPTUM_FLOW_HISTORY_PASSWORD"]
    assert password == [
        {
            "name": "SEPTUM_FLOW_HISTORY_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "clickhouse-septum", "key": "password"}},
        }
    ]
    both = _helm(
        "template", "septum", str(CHART),
        "--set=agent.flowHistory.enabled=true", "--set=agent.flowHistory.server.url=http://ch",
    )  # fmt: skip
    assert both.returncode != 0 and "choose one" in both.stderr
    bad = _helm("template", "septum", str(CHART), "--set=agent.flowHistory.server.url=ch:8123")
    assert bad.returncode != 0 and "/agent/flowHistory/server/url" in bad.stderr


def test_tofqdns_values_reach_the_agent_and_bad_ones_are_refused_by_path() -> None:
    args = _container(
        render(
            "agent.l7Proxy.enabled=true",
            "agent.l7Proxy.tofqdns.minTTL=3600",
            "agent.l7Proxy.tofqdns.idleConnectionGracePeriod=1m30s",
        )[("DaemonSet", "septum-agent")]
    )["args"]
    assert "--tofqdns-min-ttl=3600" in args
    assert "--tofqdns-idle-connection-grace-period=1m30s" in args
    for value, path in (
        ("agent.l7Proxy.tofqdns.endpointMaxIpPerHostname=0", "endpointMaxIpPerHostname"),
        ("agent.l7Proxy.tofqdns.idleConnectionGracePeriod=5 minutes", "idleConnectionGracePeriod"),
    ):
        bad = _helm("template", "septum", str(CHART), f"--set={value}")
        assert bad.returncode != 0 and f"/agent/l7Proxy/tofqdns/{path}" in bad.stderr, bad.stderr
