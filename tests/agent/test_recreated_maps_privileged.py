"""Issue #12: after a restart whose load recreated maps (a changed capacity here, as a new
object would), the agent's first sync refills them and every adopted endpoint runs the new
object's programs.

Two agent processes of one node, one after the other, each run as the daemon runs its
datapath side: `LocalEndpoints` over pods that are network namespaces with real veths, a
real `Compiler` fed the cluster's objects, `NodeSync`, and the daemon's own `_first_sync`.
The verdicts are checked with real TCP connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from septum.agent.daemon import Agent, AgentOptions
from septum.agent.endpoints import LocalEndpoints, local_addresses
from septum.agent.sync import NodeSync
from septum.dataplane import abi, loader, netns
from septum.dataplane.addressing import host_key, parse_prefix
from septum.dataplane.config import DatapathConfig
from septum.dataplane.counters import CounterKey, CounterValue
from septum.dataplane.sandbox import (
    GATEWAY_V4,
    Pod,
    Sandbox,
    TcpServer,
    echo,
    sandbox_namespaces,
    tcp_connect,
    tcp_connection,
)
from septum.operator.identity.objects import identity_object

pytestmark = pytest.mark.privileged

NAMESPACE = "shop"
ALLOWED_PORT, DENIED_PORT = 8080, 9090
CLIENT_IDENTITY, SERVER_IDENTITY = 1000, 1001
CLIENT_IP, SERVER_IP = "10.94.0.1", "10.94.0.2"
DENIED_TIMEOUT_S = 0.5
POLICY_DROPS = (abi.DropReason.POLICY_DENIED, abi.DropReason.POLICY_DENY)
# the maps the second agent's capacities (`_resized`) differ for, so its load recreates them
RECREATED = {abi.MAP_POLICY, abi.MAP_IPCACHE_HOST, abi.MAP_IPCACHE}


# ---- the cluster the compiler is fed -----------------------------------------------------


def _namespace() -> dict[str, Any]:
    return {"metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}}}


def _pod(node: str, app: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": app,
            "namespace": NAMESPACE,
            "uid": f"uid-{app}",
            "labels": {"app": app},
        },
        "spec": {"nodeName": node, "serviceAccountName": "default"},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    }


def _server_policy() -> dict[str, Any]:
    """The server admits the client on ALLOWED_PORT only (DENIED_PORT: default deny)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "client-to-server", "namespace": NAMESPACE, "generation": 1},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"protocol": "TCP", "port": ALLOWED_PORT}],
                }
            ],
        },
    }


def _feed_cluster(agent: Agent, node: str) -> None:
    """What the watches' first list delivers, identities as the operator allocated them."""
    compiler = agent.compiler
    compiler.apply("Namespace", "upsert", _namespace())
    ns_labels = {NAMESPACE: dict(_namespace()["metadata"]["labels"])}
    for app, ip, number in (
        ("client", CLIENT_IP, CLIENT_IDENTITY),
        ("server", SERVER_IP, SERVER_IDENTITY),
    ):
        pod = _pod(node, app, ip)
        compiler.apply("Pod", "upsert", pod)
        labels = compiler._label_set(pod, ns_labels)
        compiler.apply(
            "SeptumIdentity", "upsert", identity_object(number, labels.source, labels.items)
        )
    compiler.apply("NetworkPolicy", "upsert", _server_policy())


# ---- the node's agent processes ----------------------------------------------------------


@dataclass
class AgentProcess:
    agent: Agent
    endpoints: LocalEndpoints
    sync: NodeSync
    adopted: int


class Node:
    """One node's agent processes, one after the other; whatever runs last is torn down."""

    def __init__(self, config: DatapathConfig, state_dir: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.current: AgentProcess | None = None

    def start(self, config: DatapathConfig) -> AgentProcess:
        """An agent process starts as `Agent._open_datapath` does (datapath, adopt the
        recorded endpoints, the node's addresses are the host), in the node's netns."""
        agent = Agent(AgentOptions(node=config.node_name, state_dir=self.state_dir))
        endpoints = LocalEndpoints(config, agent.options.node_state_dir)
        # the agent runs inside its node's netns: restore() looks the veths up there
        with netns.entered(config.netns):
            adopted = len(endpoints.restore())
            agent.compiler.add_host_addresses(local_addresses())
        agent.endpoints = endpoints
        agent.sync = NodeSync(agent.compiler, endpoints, agent.metadata)
        self.current = AgentProcess(agent, endpoints, agent.sync, adopted)
        return self.current

    def first_sync(self) -> None:
        """The watches' first complete list, then the daemon's own first sync."""
        assert self.current is not None
        _feed_cluster(self.current.agent, self.config.node_name)
        self.current.agent._first_sync()

    def stop(self) -> None:
        """The agent process exits: its handles close, pins and links stay."""
        assert self.current is not None
        self.current.endpoints.close()
        self.current = None

    def teardown(self) -> None:
        if self.current is not None:
            self.current.endpoints.datapath.teardown()
            self.current = None
        loader.remove_pins(self.config.pin_dir)  # a test that failed between two processes


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    prefix = f"srm{secrets.token_hex(2)}"
    box = Sandbox(prefix)
    try:
        yield box
    finally:
        box.close()
        assert sandbox_namespaces(prefix) == [], "network namespaces left behind"


@pytest.fixture
def node(sandbox: Sandbox, tmp_path: Path) -> Iterator[Node]:
    name = f"t-rm-{secrets.token_hex(2)}"
    node = Node(DatapathConfig(node_name=name, netns=sandbox.node_ns), tmp_path)
    try:
        yield node
    finally:
        node.teardown()
        assert not node.config.pin_dir.exists(), f"pins of {name} left behind"


@pytest.fixture
def pods(sandbox: Sandbox) -> Iterator[tuple[Pod, Pod]]:
    client = sandbox.add_pod("c", CLIENT_IP)
    server = sandbox.add_pod("s", SERVER_IP)
    servers = [EchoServer(server.name, SERVER_IP, port) for port in (ALLOWED_PORT, DENIED_PORT)]
    try:
        yield client, server
    finally:
        for listening in servers:
            listening.close()


class EchoServer(TcpServer):
    """TcpServer with a thread per connection and no idle limit: the connection held open
    across the restart neither times out nor keeps new connections waiting."""

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                with contextlib.suppress(OSError):
                    conn.sendall(data)


def _cni_add(process: AgentProcess, pod: Pod, name: str) -> None:
    """A CNI ADD as the plugin sends it; done once the pod's compiled policy is written."""

    async def add() -> None:
        done = process.sync.cni_add(
            f"cid-{name}", NAMESPACE, name, pod.host_interface, (pod.ipv4,), (GATEWAY_V4,)
        )
        process.sync.reconcile()
        await asyncio.wait_for(done, 5)

    asyncio.run(add())


def _policy_drops(
    before: dict[CounterKey, CounterValue], after: dict[CounterKey, CounterValue]
) -> int:
    return sum(
        value.packets - (before[key].packets if key in before else 0)
        for key, value in after.items()
        if key.verdict == abi.Verdict.DROPPED and key.drop_reason in POLICY_DROPS
    )


def _assert_verdicts(process: AgentProcess, client: Pod) -> None:
    """Client to server: ALLOWED_PORT connects, DENIED_PORT is dropped by policy."""
    datapath = process.endpoints.datapath
    assert tcp_connect(client.name, SERVER_IP, ALLOWED_PORT)
    before = datapath.counters()
    assert not tcp_connect(client.name, SERVER_IP, DENIED_PORT, timeout_s=DENIED_TIMEOUT_S)
    assert _policy_drops(before, datapath.counters()) >= 1


def _host_identities(process: AgentProcess) -> dict[bytes, int]:
    """The ipcache's host entries: key bytes -> identity."""
    return {bytes(k): int(v.identity) for k, v in process.endpoints.datapath.ipcache_hosts.items()}


def _expected_hosts() -> dict[bytes, int]:
    """The pods' addresses and the veths' gateway (the node: host, identity 1)."""
    wanted = {CLIENT_IP: CLIENT_IDENTITY, SERVER_IP: SERVER_IDENTITY, GATEWAY_V4: 1}
    return {bytes(host_key(parse_prefix(ip))): number for ip, number in wanted.items()}


def _resized(config: DatapathConfig) -> DatapathConfig:
    """`config` with other capacities for the policy map and both ipcache maps."""
    return replace(config, policy_entries=4096, ipcache_hosts=4096, ipcache_cidrs=1024)


def _bpftool(*args: str) -> Any:
    shown = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True)
    return json.loads(shown.stdout)


def _map_ids(pin_dir: Path) -> dict[str, int]:
    """The kernel id of each map pinned in `pin_dir`."""
    return {
        name: _bpftool("map", "show", "pinned", str(pin_dir / name))["id"]
        for name in (*RECREATED, abi.MAP_CONNTRACK4)
    }


def _maps_of_links(pin_dir: Path) -> dict[str, set[int]]:
    """Every pinned link: pin name -> the ids of the maps its program uses."""
    found = {}
    for pin in sorted((pin_dir / "links").iterdir()):
        link = _bpftool("link", "show", "pinned", str(pin))
        found[pin.name] = set(_bpftool("prog", "show", "id", str(link["prog_id"]))["map_ids"])
    return found


def test_recreated_maps_are_refilled_and_every_endpoint_reattached(
    node: Node, pods: tuple[Pod, Pod]
) -> None:
    client, server = pods
    first = node.start(node.config)
    assert first.endpoints.recreated_maps == ()
    node.first_sync()
    _cni_add(first, client, "client")
    _cni_add(first, server, "server")
    assert _host_identities(first).items() >= _expected_hosts().items()
    _assert_verdicts(first, client)

    maps_before = _map_ids(node.config.pin_dir)

    with tcp_connection(client.name, SERVER_IP, ALLOWED_PORT) as established:
        assert echo(established)
        node.stop()
        assert echo(established)  # the pins enforce while no agent runs

        second = node.start(_resized(node.config))
        assert set(second.endpoints.recreated_maps) == RECREATED
        assert second.adopted == 2
        datapath = second.endpoints.datapath
        # every endpoint was attached again: each pod's links run programs over the new
        # maps (the old programs would go on reading the old ones), and the same conntrack
        maps_after = _map_ids(node.config.pin_dir)
        assert {maps_after[m] for m in RECREATED}.isdisjoint(maps_before.values())
        assert maps_after[abi.MAP_CONNTRACK4] == maps_before[abi.MAP_CONNTRACK4]
        links = _maps_of_links(node.config.pin_dir)
        assert sorted(links) == ["ep1-egress", "ep1-ingress", "ep2-egress", "ep2-ingress"]
        for pin, map_ids in links.items():
            assert set(maps_after.values()) <= map_ids, pin
        # restore() swapped the new object's programs in, over the new, empty maps: until
        # the first sync refills them, a new connection is decided by empty maps, never open
        assert list(datapath.ipcache_hosts.keys()) == []
        assert list(datapath.policy_map.keys()) == []
        assert not tcp_connect(client.name, SERVER_IP, DENIED_PORT, timeout_s=DENIED_TIMEOUT_S)
        # conntrack was not recreated: the established connection goes on
        assert echo(established)

        node.first_sync()
        # refilled: every prefix, and the enforced endpoint's policy
        assert _host_identities(second).items() >= _expected_hosts().items()
        [server_record] = second.endpoints.by_pod(NAMESPACE, "server")
        assert server_record.endpoint_id in {k.endpoint_id for k in datapath.policy_map.keys()}
        _assert_verdicts(second, client)
        assert echo(established)
