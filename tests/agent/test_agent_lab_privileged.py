"""`septum agent` on both lab nodes with the operator: real API server, real packets.

CNI chained, endpoints for new pods, NetworkPolicy enforcement across and within nodes
(TCP, UDP, ICMP), a pod's first packet filtered, kubelet probes through default deny,
flows naming pods and policies, and an agent SIGKILLed and restarted mid-traffic.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

from .lab_agents import (
    PROBE,
    AgentProcess,
    OperatorProcess,
    agents_running,
    apply_crds,
    get_health,
    lab_exec,
)

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
HUBBLE = Path.home() / ".cache/septum/hubble/v1.20.2/bin/hubble"
TCP_PORT, UDP_PORT = 8080, 8081

# Keeps one TCP connection open and sends on it every 50 ms; prints how many round trips
# succeeded and the first error.
LONG_LIVED = r"""
import socket, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
c = socket.create_connection((ip, port), timeout=2)
c.settimeout(2)
ok, end = 0, time.monotonic() + seconds
try:
    while time.monotonic() < end:
        c.sendall(b"GET /hostname HTTP/1.1\r\nHost: x\r\n\r\n")
        data = c.recv(4096)
        if not data: raise ConnectionError("closed")
        ok += 1
        time.sleep(0.05)
    print("ok", ok)
except Exception as err:
    print("fail", ok, err); sys.exit(1)
"""

# Tries a denied connection again and again; prints how many got through.
HAMMER = r"""
import socket, sys, time
ip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
tries = through = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    tries += 1
    try:
        socket.create_connection((ip, port), timeout=0.3).close(); through += 1
    except OSError:
        pass
print(tries, through)
"""


def _pod(
    name: str, namespace: str, node: int, labels: dict[str, str], server: bool
) -> dict[str, Any]:
    container: dict[str, Any]
    if server:
        container = {
            "name": "srv",
            "image": AGNHOST,
            "args": ["netexec", f"--http-port={TCP_PORT}", f"--udp-port={UDP_PORT}"],
            "ports": [{"containerPort": TCP_PORT, "name": "http"}],
            "readinessProbe": {"tcpSocket": {"port": TCP_PORT}, "periodSeconds": 1},
        }
    else:
        container = {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "containers": [container],
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"kubernetes.io/hostname": f"slab-node{node}"},
        },
    }


def _deny_all(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-all", "namespace": namespace},
        "spec": {"podSelector": {"matchLabels": {"app": "srv"}}, "policyTypes": ["Ingress"]},
    }


def _allow_clients(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "allow-clients", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "srv"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                    "ports": [
                        {"protocol": "TCP", "port": TCP_PORT},
                        {"protocol": "UDP", "port": UDP_PORT},
                    ],
                }
            ],
        },
    }


def _allow_ping(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": "allow-ping", "namespace": namespace},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "srv"}},
            "ingress": [
                {
                    "fromEndpoints": [{"matchLabels": {"role": "client"}}],
                    "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}],
                }
            ],
        },
    }


class Env:
    def __init__(self, lab: Lab, namespace: str, agents: list[AgentProcess]) -> None:
        self.lab = lab
        self.namespace = namespace
        self.agents = agents

    def apply(self, obj: dict[str, Any]) -> None:
        self.lab.kubectl("apply", "-f", "-", input_text=json.dumps(obj))

    def delete(self, kind: str, name: str) -> None:
        self.lab.kubectl("delete", kind, "-n", self.namespace, name, "--wait=true")

    def pod(self, name: str) -> dict[str, Any]:
        pod: dict[str, Any] = self.lab.get_json("pod", "-n", self.namespace, name)
        return pod

    def ip(self, name: str) -> str:
        ip = wait_for(f"{name} IP", lambda: self.pod(name).get("status", {}).get("podIP"), 90)
        assert isinstance(ip, str)
        return ip

    def ready(self, name: str) -> bool:
        conditions = self.pod(name).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def reach(self, client: str, server: str, proto: str) -> bool:
        port = {"tcp": TCP_PORT, "udp": UDP_PORT, "icmp": 0}[proto]
        out = lab_exec(f"{self.namespace}/{client}", "python3", "-c", PROBE, proto,
                       self.ip(server), str(port))  # fmt: skip
        return out.returncode == 0 and out.stdout.startswith("ok")

    def expect(self, client: str, server: str, proto: str, allowed: bool, timeout_s: float = 20):
        """Poll until the probe's result is `allowed` (policy changes take a moment)."""
        want = "allowed" if allowed else "denied"
        wait_for(
            f"{self.namespace}/{client} -> {server} {proto} {want}",
            lambda: self.reach(client, server, proto) == allowed,
            timeout_s,
            interval_s=0.5,
        )


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("agents")
    apply_crds(lab)
    operator = OperatorProcess(lab, tmp / "operator.log")
    operator.start()
    namespace = f"ag-{uuid.uuid4().hex[:6]}"
    running = agents_running(lab, tmp)
    agents: list[AgentProcess] = []
    try:
        agents = next(running)
        lab.kubectl("create", "namespace", namespace)
        env = Env(lab, namespace, agents)
        for name, node, labels, server in (
            ("srv", 1, {"app": "srv"}, True),
            ("near", 1, {"role": "client"}, False),
            ("far", 2, {"role": "client"}, False),
            ("stranger", 2, {"role": "stranger"}, False),
        ):
            env.apply(_pod(name, namespace, node, labels, server))
        for name in ("srv", "near", "far", "stranger"):
            wait_for(f"{name} Ready", lambda n=name: env.ready(n), 120)  # type: ignore[misc]
        yield env
    finally:
        lab.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s", check=False)
        try:
            next(running, None)
        finally:
            operator.stop()
            for agent in agents:
                agent.remove_leftovers()
            for agent in agents:
                sys.stderr.write(f"--- {agent.node.name} log tail ---\n{agent.logs()[-4000:]}\n")


def test_pods_created_after_the_agent_get_endpoints(env: Env) -> None:
    def endpoint() -> dict[str, Any] | None:
        out = env.lab.kubectl("get", "septumendpoint", "-n", env.namespace, "srv", "-o", "json",
                              check=False)  # fmt: skip
        if out.returncode != 0:
            return None
        status: dict[str, Any] = json.loads(out.stdout).get("status") or {}
        return status if status.get("endpointID") else None

    status = wait_for("SeptumEndpoint srv with status", endpoint, 30)
    assert isinstance(status, dict)
    assert status["networking"]["node"] == "slab-node1"
    assert status["networking"]["addressing"] == [{"ipv4": env.ip("srv")}]
    number = status["identity"]["id"]
    identity = env.lab.get_json("septumidentity", str(number))
    assert identity["securityLabels"]["k8s:app"] == "srv"
    assert status["policy"]["realizedRevision"] > 0
    for agent in env.agents:
        code, body = get_health(agent.health_socket, "readyz")
        assert code == 200 and body["ready"], body
        conflist = json.loads((agent.cni_dir / "net.d" / "05-septum.conflist").read_text())
        assert conflist["plugins"][-1]["type"] == "septum-cni"


def test_default_deny_then_allow_then_delete(env: Env) -> None:
    for client in ("near", "far"):
        for proto in ("tcp", "udp", "icmp"):
            assert env.reach(client, "srv", proto), f"{client} {proto} before any policy"
    env.apply(_deny_all(env.namespace))
    try:
        for client in ("near", "far"):
            for proto in ("tcp", "udp", "icmp"):
                env.expect(client, "srv", proto, allowed=False)
        env.apply(_allow_clients(env.namespace))
        env.apply(_allow_ping(env.namespace))
        for client in ("near", "far"):
            for proto in ("tcp", "udp", "icmp"):
                env.expect(client, "srv", proto, allowed=True)
        env.expect("stranger", "srv", "tcp", allowed=False)
        env.expect("stranger", "srv", "icmp", allowed=False)
        env.delete("networkpolicy", "allow-clients")
        env.delete("septumnetworkpolicy", "allow-ping")
        env.expect("far", "srv", "tcp", allowed=False)
        env.expect("near", "srv", "icmp", allowed=False)
    finally:
        env.lab.kubectl("delete", "networkpolicy", "-n", env.namespace, "--all", "--wait=true")
        env.lab.kubectl("delete", "snp", "-n", env.namespace, "--all", "--wait=true", check=False)
    for client in ("near", "far"):
        env.expect(client, "srv", "tcp", allowed=True)


def test_first_packet_filtered_and_probes_pass_under_default_deny(env: Env) -> None:
    env.apply(_deny_all(env.namespace))
    try:
        time.sleep(1)  # let both agents see the policy before the pod exists (not a wait)
        env.apply(_pod("late", env.namespace, 1, {"app": "srv"}, True))
        ip = env.ip("late")
        results = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            out = lab_exec(f"{env.namespace}/far", "python3", "-c", PROBE, "tcp", ip,
                           str(TCP_PORT))  # fmt: skip
            results.append(out.stdout.strip())
        assert results and all(r.startswith("fail") for r in results), results
        # kubelet probes come from the node itself: allow-localhost keeps them passing
        wait_for("late Ready under default deny", lambda: env.ready("late"), 60)
        for _ in range(5):
            assert env.ready("late") and env.ready("srv")
            time.sleep(1)
    finally:
        env.lab.kubectl("delete", "pod", "-n", env.namespace, "late", "--wait=true", check=False)
        env.lab.kubectl("delete", "networkpolicy", "-n", env.namespace, "--all", "--wait=true")


def _hubble(agent: AgentProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HUBBLE), "observe", "--server", f"unix://{agent.observer_socket}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.skipif(not HUBBLE.is_file(), reason="the hubble CLI is not built")
def test_flows_name_pods_and_the_deciding_policy(env: Env) -> None:
    env.apply(_deny_all(env.namespace))
    env.apply(_allow_clients(env.namespace))
    node1 = env.agents[0]
    try:
        env.expect("far", "srv", "tcp", allowed=True)
        env.expect("stranger", "srv", "tcp", allowed=False)

        def flows() -> list[dict[str, Any]] | None:
            out = _hubble(node1, "--last", "2000", "-o", "json", "--namespace", env.namespace)
            found = [json.loads(line)["flow"] for line in out.stdout.splitlines() if line]
            dropped = [
                f for f in found
                if f.get("verdict") == "DROPPED"
                and f.get("source", {}).get("pod_name") == "stranger"
            ]  # fmt: skip
            allowed = [
                f for f in found
                if f.get("verdict") == "FORWARDED"
                and f.get("source", {}).get("pod_name") == "far"
                and f.get("ingress_allowed_by")
            ]  # fmt: skip
            return [dropped[-1], allowed[-1]] if dropped and allowed else None

        found = wait_for("a drop and an allowed flow in hubble", flows, 30)
        assert isinstance(found, list)
        drop, allow = found
        assert drop["destination"]["pod_name"] == "srv"
        assert drop["destination"]["namespace"] == env.namespace
        assert "k8s:app=srv" in drop["destination"]["labels"]
        assert drop["source"]["namespace"] == env.namespace
        assert drop["source"]["identity"] > 255
        # a default deny names a policy that isolates the destination
        (denied_by,) = drop["ingress_denied_by"]
        assert denied_by["name"] in ("deny-all", "allow-clients"), denied_by
        assert denied_by["namespace"] == env.namespace and denied_by["kind"] == "NetworkPolicy"
        assert [p["name"] for p in allow["ingress_allowed_by"]] == ["allow-clients"]
        table = _hubble(node1, "--last", "2000", "--print-policy-names", "--namespace",
                        env.namespace)  # fmt: skip
        assert "allow-clients" in table.stdout, table.stdout[-2000:]
    finally:
        env.lab.kubectl("delete", "networkpolicy", "-n", env.namespace, "--all", "--wait=true")


def test_restart_keeps_denying_and_keeps_allowed_connections(env: Env) -> None:
    env.apply(_deny_all(env.namespace))
    env.apply(_allow_clients(env.namespace))
    node1 = env.agents[0]
    try:
        env.expect("far", "srv", "tcp", allowed=True)
        env.expect("stranger", "srv", "tcp", allowed=False)
        ip = env.ip("srv")
        outputs: dict[str, subprocess.CompletedProcess[str]] = {}

        def run(name: str, client: str, script: str) -> None:
            outputs[name] = lab_exec(f"{env.namespace}/{client}", "python3", "-c", script, ip,
                                     str(TCP_PORT), "14", timeout_s=60)  # fmt: skip

        threads = [
            threading.Thread(target=run, args=("long", "far", LONG_LIVED)),
            threading.Thread(target=run, args=("hammer", "stranger", HAMMER)),
        ]
        for thread in threads:
            thread.start()
        time.sleep(2)
        node1.kill()
        node1.start()
        node1.wait_ready(40)
        for thread in threads:
            thread.join(60)
        long, hammer = outputs["long"], outputs["hammer"]
        assert long.returncode == 0 and long.stdout.startswith("ok"), long.stdout + long.stderr
        tries, through = (int(x) for x in hammer.stdout.split())
        assert tries > 10 and through == 0, hammer.stdout
        # and the restarted agent still enforces and admits
        env.expect("far", "srv", "tcp", allowed=True)
        env.expect("stranger", "srv", "tcp", allowed=False)
    finally:
        env.lab.kubectl("delete", "networkpolicy", "-n", env.namespace, "--all", "--wait=true")
