"""`septum agent` as the chart runs it, on both lab nodes: the real API server and kernel.

Node 1's agent runs as the DaemonSet's pod would (in-cluster service account, NODE_NAME, the
node's bpffs mounted at /sys/fs/bpf: incluster.py), node 2's with a kubeconfig. Both serve
the Observer on :4244 with mutual TLS from a throwaway CA and are owned by a DaemonSet that
exists only as a marker (its nodeSelector matches no node, so nothing runs it).

- peer.Peer/Notify on either agent lists both nodes at their InternalIP:4244 with their
  TLS server names, and each agent answers under the name it is announced with;
- SIGTERM while the DaemonSet exists is a restart: pins, conflist and objects stay;
- SIGTERM once the DaemonSet is deleted is an uninstall: pins, CNI chaining, run and state
  dirs, the node's SeptumEndpoints and SeptumNode are gone;
- in a pod without the node's bpffs the agent stops at once and says what to mount.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from septum.dataplane.observe.api.observer import observer_pb2, observer_pb2_grpc
from septum.dataplane.observe.api.peer import peer_pb2, peer_pb2_grpc
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

from .incluster import (
    InClusterAgent,
    ServiceAccount,
    delete_service_account,
    log_lines,
    make_service_account,
    mountpoint_dirs,
    remove_dirs,
)
from .lab_agents import (
    CONFLIST,
    PIN_ROOT,
    RUN_DIR,
    AgentProcess,
    OperatorProcess,
    agents_lock,
    apply_crds,
)
from .pki import ObserverPki, make_pki

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

CLUSTER = "default"  # the operator's (OperatorProcess): identities carry the cluster name
PORT = 4244
OWNER = "septum-agent"


def _owner_daemonset(namespace: str) -> dict[str, Any]:
    labels = {"app": "septum-owner-marker"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": OWNER, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"septum.io/no-such-node": "true"},
                    "containers": [{"name": "marker", "image": "busybox", "command": ["true"]}],
                },
            },
        },
    }


@dataclass
class Env:
    lab: Lab
    namespace: str
    pki: ObserverPki
    account: ServiceAccount
    agents: list[AgentProcess]
    tmp: Path

    def flags(self) -> tuple[str, ...]:
        return (
            "--observer-address", f":{PORT}", *self.pki.agent_flags(),
            "--cluster-name", CLUSTER, "--owner-daemonset", f"{self.namespace}/{OWNER}",
        )  # fmt: skip

    def channel(self, address: str, server_name: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pki.ca.read_bytes(),
            private_key=self.pki.client_key.read_bytes(),
            certificate_chain=self.pki.client_cert.read_bytes(),
        )
        options = [("grpc.ssl_target_name_override", server_name)]
        return grpc.secure_channel(address, credentials, options=options)

    def septum_objects(self, node: str) -> list[str]:
        found = []
        for item in self.lab.get_json("septumendpoints", "-A").get("items", []):
            if (item.get("status") or {}).get("networking", {}).get("node") == node:
                found.append(f"SeptumEndpoint {item['metadata']['name']}")
        names = self.lab.kubectl("get", "septumnodes", "-o", "name").stdout.split()
        return found + [n for n in names if n.endswith(f"/{node}")]


def _server_name(node: str) -> str:
    return f"{node}.{CLUSTER}.hubble-grpc.septum.io"


def _pod(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": namespace, "labels": {"app": "client"}},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}],
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"kubernetes.io/hostname": "slab-node1"},
        },
    }


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("cluster")
    apply_crds(lab)
    namespace = f"ac-{uuid.uuid4().hex[:6]}"
    lab.kubectl("create", "namespace", namespace)
    made = mountpoint_dirs()
    account = make_service_account(lab, namespace, "septum-agent", tmp / "sa")
    operator = OperatorProcess(lab, tmp / "operator.log")
    agents: list[AgentProcess] = []
    try:
        lab.kubectl("apply", "-f", "-", input_text=json.dumps(_owner_daemonset(namespace)))
        operator.start()
        with agents_lock(lab):
            env = Env(lab, namespace, make_pki(tmp, CLUSTER), account, agents, tmp)
            node1, node2 = lab.nodes
            agents.append(
                InClusterAgent(
                    node1, lab, tmp / "state", tmp / "agent-1.log", env.flags(),
                    account=account, host_bpffs=tmp / "host-bpffs",
                )
            )  # fmt: skip
            agents.append(AgentProcess(node2, lab, tmp / "state", tmp / "agent-2.log", env.flags()))
            try:
                for agent in agents:
                    agent.start()
                for agent in agents:
                    agent.wait_ready(90)
                yield env
            finally:
                for agent in agents:
                    agent.stop()
                for agent in agents:
                    agent.remove_leftovers()
    finally:
        lab.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s", check=False)
        operator.stop()
        delete_service_account(lab, account)
        remove_dirs(made)
        for agent in agents:
            sys.stderr.write(f"--- {agent.node.name} log tail ---\n{agent.logs()[-4000:]}\n")


def _internal_ip(lab: Lab, node: str) -> str:
    addresses = lab.get_json("node", node)["status"]["addresses"]
    return str(next(a["address"] for a in addresses if a["type"] == "InternalIP"))


def _notify(env: Env, name: str, want: int) -> dict[str, tuple[int, str, str]]:
    """Follow Notify on node `name`'s Observer, as the relay does, until `want` peers came."""
    address = f"{_internal_ip(env.lab, name)}:{PORT}"
    notes: queue.Queue[peer_pb2.ChangeNotification | Exception] = queue.Queue()
    with env.channel(address, _server_name(name)) as channel:
        stream = peer_pb2_grpc.PeerStub(channel).Notify(peer_pb2.NotifyRequest(), timeout=20)

        def read() -> None:
            try:
                for note in stream:
                    notes.put(note)
            except Exception as err:  # noqa: BLE001 - the cancel at the end, or the failure
                notes.put(err)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        found: dict[str, tuple[int, str, str]] = {}
        while len(found) < want:
            note = notes.get(timeout=20)
            assert not isinstance(note, Exception), note
            found[note.name] = (note.type, note.address, note.tls.server_name)
        stream.cancel()
        reader.join(10)
    return found


def test_notify_lists_every_node_at_its_internal_ip_over_mtls(env: Env) -> None:
    addresses = {n.name: _internal_ip(env.lab, n.name) for n in env.lab.nodes}
    want = {
        name: (peer_pb2.PEER_ADDED, f"{ip}:{PORT}", _server_name(name))
        for name, ip in addresses.items()
    }
    for name in addresses:
        # an agent announces itself at its InternalIP once its Node is listed (at once)
        wait_for(
            f"Notify on {name} lists both nodes", lambda n=name: _notify(env, n, 2) == want, 30
        )  # type: ignore[misc]
    # the relay dials each announced address under its announced name: both answer
    for name, ip in addresses.items():
        with env.channel(f"{ip}:{PORT}", _server_name(name)) as channel:
            stub = observer_pb2_grpc.ObserverStub(channel)
            (node,) = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10).nodes
            assert (node.name, node.address) == (name, f"{ip}:{PORT}")
            assert node.tls.server_name == _server_name(name)


def test_sigterm_with_the_daemonset_in_place_keeps_everything(env: Env) -> None:
    env.lab.kubectl("apply", "-f", "-", input_text=json.dumps(_pod(env.namespace)))
    node1 = env.agents[0]
    name = node1.node.name
    wait_for(
        "a SeptumEndpoint on node 1",
        lambda: any("Endpoint" in o for o in env.septum_objects(name)),
        120,
    )
    assert node1.stop() == 0
    assert any("a restart" in str(line.get("msg")) for line in log_lines(node1)), node1.logs()
    assert (PIN_ROOT / name).is_dir()
    assert (node1.cni_dir / "net.d" / CONFLIST).is_file()
    assert (RUN_DIR / name).is_dir()
    assert f"septumnode.septum.io/{name}" in env.septum_objects(name)
    node1.start()
    node1.wait_ready(90)


def test_sigterm_once_the_daemonset_is_deleted_uninstalls(env: Env) -> None:
    names = [agent.node.name for agent in env.agents]
    assert any("Endpoint" in o for o in env.septum_objects(names[0]))
    env.lab.kubectl("delete", "daemonset", "-n", env.namespace, OWNER, "--wait=true")
    for agent in env.agents:
        assert agent.stop() == 0, agent.logs()[-3000:]
    for agent in env.agents:
        name = agent.node.name
        messages = [str(line.get("msg")) for line in log_lines(agent)]
        assert any(m.startswith(f"owner daemonsets/{env.namespace}/{OWNER} gone") for m in messages)
        (done,) = [
            line
            for line in log_lines(agent)
            if str(line.get("msg")).startswith("uninstall: the node")
        ]
        assert f"pins {PIN_ROOT / name}" in done["removed"], done  # type: ignore[operator]
        assert not (PIN_ROOT / name).exists()
        assert not (agent.cni_dir / "net.d" / CONFLIST).exists()
        assert not (agent.cni_dir / "bin" / "septum-cni").exists()
        assert not (RUN_DIR / name).exists()
        assert not (agent.state_dir / name).exists()
        assert env.septum_objects(name) == []


def test_in_a_pod_without_the_nodes_bpffs_the_agent_says_what_to_mount(env: Env) -> None:
    agent = InClusterAgent(
        env.lab.nodes[0], env.lab, env.tmp / "state-nobpf", env.tmp / "agent-nobpf.log",
        ("--observer-socket", str(env.tmp / "nobpf.sock")), account=env.account,
    )  # fmt: skip
    agent.start()
    assert agent.proc is not None
    assert agent.proc.wait(60) == 1
    assert "is not a bpffs mount: mount the node's /sys/fs/bpf" in agent.logs(), agent.logs()
    assert not (env.tmp / "state-nobpf").exists()  # it stopped before touching anything
