"""The host firewall on the lab: a SeptumClusterwideNetworkPolicy with a nodeSelector for
one node is enforced on that node's own uplink by its agent (`--host-firewall`).

Node 1 listens (in its namespace, on its own address) on two ports; the policy admits
only the other node (`remote-node`) on the first.  Pod traffic across the nodes, which
crosses both uplinks, is not the host policy's business; deleting the policy restores
everything.  The policy is deleted even when the test fails."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from septum.lab.config import NodeSpec
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

from .lab_agents import AgentProcess, OperatorProcess, agents_running, apply_crds, get_health

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
POD_PORT = 8080
ALLOWED_PORT, DENIED_PORT = 18081, 18082  # outside the NodePort range kube-proxy owns

# Runs in node 1's namespace: accepts and closes on every port given.
LISTEN = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[2:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], int(port))); s.listen(16); sel.register(s, selectors.EVENT_READ)
print("listening", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept(); conn.close()
"""

CONNECT = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).close(); print("ok")
except OSError as err:
    print("fail", err); sys.exit(1)
"""


def in_netns(netns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", netns, *cmd]


def connects(netns: str, address: str, port: int) -> bool:
    out = subprocess.run(
        in_netns(netns, sys.executable, "-c", CONNECT, address, str(port)),
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    return out.returncode == 0


@dataclass
class Env:
    lab: Lab
    namespace: str
    agents: list[AgentProcess]

    @property
    def target(self) -> NodeSpec:  # the node the host policy selects
        return self.lab.nodes[0]

    @property
    def other(self) -> NodeSpec:
        return self.lab.nodes[1]

    def pod_ip(self, name: str) -> str:
        out = self.lab.kubectl("get", "pod", "-n", self.namespace, name, "-o", "json")
        return str(json.loads(out.stdout)["status"].get("podIP") or "")

    def pod_ready(self, name: str) -> bool:
        out = self.lab.kubectl("get", "pod", "-n", self.namespace, name, "-o", "json", check=False)
        if out.returncode != 0:
            return False
        conditions = json.loads(out.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def expect(self, what: str, netns: str, address: str, port: int, allowed: bool) -> None:
        wait_for(
            f"{what}: {netns} -> {address}:{port} {'allowed' if allowed else 'denied'}",
            lambda: connects(netns, address, port) == allowed,
            30,
            interval_s=0.5,
        )


def host_policy(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumClusterwideNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node}},
            "ingress": [
                {
                    "fromEntities": ["remote-node"],
                    "toPorts": [{"ports": [{"port": str(ALLOWED_PORT), "protocol": "TCP"}]}],
                }
            ],
        },
    }


def server_pod(namespace: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "srv", "namespace": namespace, "labels": {"app": "srv"}},
        "spec": {
            "containers": [
                {
                    "name": "srv",
                    "image": AGNHOST,
                    "args": ["netexec", f"--http-port={POD_PORT}"],
                    "readinessProbe": {"tcpSocket": {"port": POD_PORT}, "periodSeconds": 1},
                }
            ],
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"kubernetes.io/hostname": node},
        },
    }


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("hostfw")
    apply_crds(lab)
    operator = OperatorProcess(lab, tmp / "operator.log")
    operator.start()
    namespace = f"hf-{uuid.uuid4().hex[:6]}"
    running = agents_running(lab, tmp, ("--host-firewall",))
    agents: list[AgentProcess] = []
    try:
        agents = next(running)
        lab.kubectl("create", "namespace", namespace)
        env = Env(lab, namespace, agents)
        lab.kubectl(
            "apply", "-f", "-", input_text=json.dumps(server_pod(namespace, env.target.name))
        )
        wait_for("srv Ready", lambda: env.pod_ready("srv"), 120)
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
                sys.stderr.write(f"--- {agent.node.name} log tail ---\n{agent.logs()[-3000:]}\n")


@contextlib.contextmanager
def listening(netns: str, address: str, *ports: int) -> Iterator[None]:
    """A TCP listener on `address` in a node's namespace, for the block."""
    proc = subprocess.Popen(
        in_netns(netns, sys.executable, "-c", LISTEN, address, *map(str, ports)),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("listening")
        yield
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_host_policy_guards_the_node_not_its_pods(env: Env) -> None:
    target, other = env.target, env.other
    name = f"hostfw-{uuid.uuid4().hex[:6]}"
    with (
        listening(target.netns, target.ip, ALLOWED_PORT, DENIED_PORT),
        listening(other.netns, other.ip, DENIED_PORT),
    ):
        pod_ip = env.pod_ip("srv")
        env.expect("no host policy", other.netns, target.ip, DENIED_PORT, True)
        try:
            env.lab.kubectl(
                "apply", "-f", "-", input_text=json.dumps(host_policy(name, target.name))
            )
            env.expect("host policy", other.netns, target.ip, DENIED_PORT, False)
            assert connects(other.netns, target.ip, ALLOWED_PORT)
            # pod traffic crosses both uplinks and is not the host policy's: the other
            # node reaches the pod behind the guarded node on a port the host does not allow
            assert connects(other.netns, pod_ip, POD_PORT)
            # the guarded node's own connections out (egress not selected): their replies
            # come back from a port its ingress policy does not allow, and pass as replies
            assert connects(target.netns, other.ip, DENIED_PORT)
            # the agent behind the host firewall still talks to the API server
            status, body = get_health(env.agents[0].health_socket, "readyz")
            assert status == 200 and body.get("apiReachable"), body
        finally:
            env.lab.kubectl("delete", "sccnp", name, "--ignore-not-found", check=False)
        # deleting the policy restores everything
        env.expect("policy deleted", other.netns, target.ip, DENIED_PORT, True)
