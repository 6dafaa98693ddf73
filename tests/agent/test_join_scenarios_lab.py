"""The join's end-to-end scenarios (issue #12) on the lab: operator and agents, real packets.

What tests/agent/test_agent_lab_privileged.py and tests/operator/test_operator_lab.py do not
cover already: the admin and baseline tiers (ClusterNetworkPolicy v1alpha2) against
NetworkPolicies, SeptumNetworkPolicy edits and SeptumClusterwideNetworkPolicies; namespace and
pod label changes; a Deployment scaled up; a pod recreated keeping its identity; the operator
restarted; the API server unreachable from the agents for a minute (through a relay that
black-holes, `ApiRelay`, which says why not SIGSTOP); malformed and semantically invalid
policies; flows naming pods, workloads and policies on both nodes (the hubble CLI).

Longer than a module should be, on purpose: the scenarios share one module-scoped operator and
agent per node (starting them costs over a minute), so they stay in one module.

One operator and one agent per lab node serve the whole module; every test has its own `sc-`
namespaces and few pods. Probes run in the client pod's network namespace (`ip netns exec`,
no API call, so they also work while the agents are cut off from the API server), several
at once.

IPv4 only: the lab network, pod CIDRs and CNI ranges are IPv4
(septum.lab.config, septum.lab.network), so no scenario covers IPv6.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.lab import config
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

from .lab_agents import (
    PROBE,
    ROOT,
    SEPTUM,
    AgentProcess,
    OperatorProcess,
    agents_running,
    apply_crds,
)

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
HUBBLE = Path.home() / ".cache/septum/hubble/v1.20.2/bin/hubble"
TCP_PORT, UDP_PORT = 8080, 8081
NODE1, NODE2 = "slab-node1", "slab-node2"
NS_NAME = "kubernetes.io/metadata.name"
POD_NS = "k8s:io.kubernetes.pod.namespace"
OUTAGE_S = 60

# New TCP connections, one after another for `seconds`: prints "<tries> <connected>".
CONNECT_LOOP = r"""
import socket, sys, time
ip, port, seconds, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
tries = connected = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    tries += 1
    try:
        socket.create_connection((ip, port), timeout=timeout).close(); connected += 1
    except OSError:
        pass
    time.sleep(0.2)
print(tries, connected)
"""


# ---- objects ---------------------------------------------------------------------------


def server_pod(namespace: str, name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    return _pod(namespace, name, node, labels, _server_container())


def client_pod(namespace: str, name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    container = {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}
    return _pod(namespace, name, node, labels, container)


def _server_container() -> dict[str, Any]:
    return {
        "name": "srv",
        "image": AGNHOST,
        "args": ["netexec", f"--http-port={TCP_PORT}", f"--udp-port={UDP_PORT}"],
        "ports": [{"containerPort": TCP_PORT, "name": "http"}],
        "readinessProbe": {"tcpSocket": {"port": TCP_PORT}, "periodSeconds": 1},
    }


def _pod(
    namespace: str, name: str, node: str, labels: dict[str, str], container: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "containers": [container],
            "terminationGracePeriodSeconds": 1,
            "nodeSelector": {"kubernetes.io/hostname": node},
        },
    }


def deployment(namespace: str, name: str, node: str | None, replicas: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [_server_container()], "terminationGracePeriodSeconds": 1}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def network_policy(
    namespace: str, name: str, target: dict[str, str], peers: list[dict[str, Any]], *ports: str
) -> dict[str, Any]:
    """Ingress to `target` from `peers` on `ports` ("tcp/8080"); no peers: deny all."""
    ingress = []
    if peers:
        rule: dict[str, Any] = {"from": peers}
        if ports:
            rule["ports"] = [
                {"protocol": p.split("/")[0].upper(), "port": int(p.split("/")[1])} for p in ports
            ]
        ingress.append(rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": target},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def septum_policy(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "septum.io/v2",
        "kind": "SeptumNetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def to_ports(*ports: str) -> list[dict[str, Any]]:
    return [
        {"ports": [{"port": p.split("/")[1], "protocol": p.split("/")[0].upper()}]} for p in ports
    ]


def cluster_network_policy(
    name: str, tier: str, namespace: str, target: dict[str, str], rules: list[dict[str, Any]]
) -> dict[str, Any]:
    """A v1alpha2 ClusterNetworkPolicy whose subject is `target` pods of `namespace`."""
    return {
        "apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "tier": tier,
            "priority": 10,
            "subject": {
                "pods": {
                    "namespaceSelector": {"matchLabels": {NS_NAME: namespace}},
                    "podSelector": {"matchLabels": target},
                }
            },
            "ingress": rules,
        },
    }


def same_namespace(namespace: str) -> list[dict[str, Any]]:
    return [{"namespaces": {"matchLabels": {NS_NAME: namespace}}}]


# ---- the module's cluster: operator + agents -------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    ip: str
    node: str

    @property
    def netns(self) -> str:
        return config.pod_netns(self.uid)


Case = tuple[Pod, str, str]  # client, server IP, protocol


@dataclass
class Operator(OperatorProcess):
    """The module's operator, leading its own Lease: other sessions on the shared lab may run
    an operator on the default Lease meanwhile, and a restart here must be the leader's."""

    lease_namespace: str = "kube-system"

    def start(self) -> None:
        argv = [
            SEPTUM, "operator", "--kubeconfig", str(self.lab.kubeconfig),
            f"--namespace={self.lease_namespace}", "--health-port", "0", "--log-format", "json",
            "--identity-gc-interval", "10m",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)

    def leader(self) -> str | None:
        """The Lease's holder, when its lease is held."""
        out = self.lab.kubectl("get", "lease", "-n", self.lease_namespace, "septum-operator",
                               "-o", "json", check=False)  # fmt: skip
        if out.returncode != 0:
            return None
        holder = json.loads(out.stdout)["spec"].get("holderIdentity")
        return str(holder) if holder else None


@dataclass
class Cluster:
    lab: Lab
    operator: Operator
    agents: list[AgentProcess]
    relay: ApiRelay
    namespaces: list[str] = field(default_factory=list)

    def apply(self, *objects: dict[str, Any]) -> None:
        self.lab.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(objects))

    def try_apply(self, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return self.lab.kubectl("apply", "-f", "-", input_text=json.dumps(obj), check=False)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        where = ("-n", namespace) if namespace else ()
        self.lab.kubectl("delete", kind, *where, name, "--wait=true")

    def namespace(self, labels: Mapping[str, str] | None = None) -> str:
        name = f"sc-{uuid.uuid4().hex[:6]}"
        self.apply(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})},
            }
        )
        self.namespaces.append(name)
        return name

    def pod(self, namespace: str, name: str) -> Pod | None:
        """The pod once it is Running with an IP (servers: Ready too)."""
        out = self.lab.kubectl("get", "pod", "-n", namespace, name, "-o", "json", check=False)
        if out.returncode != 0:
            return None
        obj = json.loads(out.stdout)
        status = obj.get("status") or {}
        if status.get("phase") != "Running" or not status.get("podIP"):
            return None
        if not all(c.get("ready") for c in status.get("containerStatuses") or [{}]):
            return None
        meta = obj["metadata"]
        return Pod(namespace, name, meta["uid"], status["podIP"], obj["spec"]["nodeName"])

    def start_pods(self, *objects: dict[str, Any]) -> dict[str, Pod]:
        self.apply(*objects)
        found: dict[str, Pod] = {}
        for obj in objects:
            meta = obj["metadata"]
            pod = wait_for(
                f"pod {meta['namespace']}/{meta['name']} running",
                lambda m=meta: self.pod(m["namespace"], m["name"]),
                120,
            )
            assert isinstance(pod, Pod)
            found[pod.name] = pod
        return found

    def deployment_pods(self, namespace: str, app: str) -> list[Pod]:
        items = self.lab.get_json("pods", "-n", namespace, "-l", f"app={app}")["items"]
        pods = [self.pod(namespace, p["metadata"]["name"]) for p in items]
        return [p for p in pods if p is not None]

    def endpoint_identity(self, pod: Pod) -> int | None:
        """The identity on the pod's SeptumEndpoint, once it is this very pod's."""
        out = self.lab.kubectl(
            "get", "septumendpoint", "-n", pod.namespace, pod.name, "-o", "json", check=False
        )
        if out.returncode != 0:
            return None
        obj = json.loads(out.stdout)
        owners = [o.get("uid") for o in obj["metadata"].get("ownerReferences") or []]
        number = ((obj.get("status") or {}).get("identity") or {}).get("id")
        return int(number) if pod.uid in owners and number else None

    def identities(self, namespace: str) -> dict[str, dict[str, Any]]:
        items = self.lab.get_json("septumidentities", "-l", f"septum.io/namespace={namespace}")
        return {
            i["metadata"]["name"]: {
                "securityLabels": i["securityLabels"],
                "labels": i["metadata"].get("labels"),
            }
            for i in items["items"]
        }


def reaches(client: Pod, server_ip: str, proto: str) -> bool:
    port = {"tcp": TCP_PORT, "udp": UDP_PORT, "icmp": 0}[proto]
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            client.netns,
            sys.executable,
            "-c",
            PROBE,
            proto,
            server_ip,
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return out.returncode == 0 and out.stdout.startswith("ok")


def reachability(cases: list[Case]) -> dict[str, bool]:
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda c: reaches(*c), cases))
    return {_describe(case): result for case, result in zip(cases, results, strict=True)}


def _describe(case: Case) -> str:
    client, ip, proto = case
    return f"{client.namespace}/{client.name} -> {ip} {proto}"


def expect(want: Mapping[Case, bool], timeout_s: float = 25) -> None:
    """Polls every probe of `want` until each gives its expected result (policy changes
    take a moment to reach the datapath); fails with the probes that differed last."""
    cases = list(want)
    expected = {_describe(c): want[c] for c in cases}

    def mismatches() -> dict[str, str]:
        got = reachability(cases)
        return {
            k: f"{'allowed' if v else 'denied'}, want {'allowed' if expected[k] else 'denied'}"
            for k, v in got.items()
            if v != expected[k]
        }

    wait_for(
        "reachability",
        lambda: not (wrong := mismatches()) or _Failing(wrong),
        timeout_s,
        interval_s=0.2,
    )


class _Failing(dict[str, str]):
    """A mismatch report that is falsy (wait_for keeps polling and reports it at the end)."""

    def __bool__(self) -> bool:
        return False


def connect_loop(client: Pod, server_ip: str, seconds: float, timeout_s: float) -> tuple[int, int]:
    """(tries, connected) of new TCP connections to `server_ip` during `seconds`."""
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            client.netns,
            sys.executable,
            "-c",
            CONNECT_LOOP,
            server_ip,
            str(TCP_PORT),
            str(seconds),
            str(timeout_s),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    tries, connected = (int(x) for x in out.stdout.split())
    return tries, connected


class Background:
    """Allowed and denied connection loops running while something else happens."""

    def __init__(self, allowed: Case, denied: Case, seconds: float) -> None:
        self.results: dict[str, tuple[int, int]] = {}
        self.threads = [
            threading.Thread(target=self._run, args=("allowed", allowed, seconds, 1.0)),
            threading.Thread(target=self._run, args=("denied", denied, seconds, 0.3)),
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, name: str, case: Case, seconds: float, timeout_s: float) -> None:
        client, ip, _ = case
        self.results[name] = connect_loop(client, ip, seconds, timeout_s)

    def check(self) -> None:
        for thread in self.threads:
            thread.join(OUTAGE_S * 3)
        tries, connected = self.results["allowed"]
        assert tries > 5 and connected == tries, f"allowed: {connected} of {tries} connected"
        tries, connected = self.results["denied"]
        assert tries > 5 and connected == 0, f"denied: {connected} of {tries} connected"


class ApiRelay:
    """A TCP relay between the agents and the API server, which a test can cut.

    The agents reach the API server through it (their kubeconfig names the relay; TLS passes
    through untouched, and the relay listens on the API server's own address, which its
    certificate names). Cut, it black-holes: connections stay open, nothing is relayed either
    way and new ones are held, as when the API server is unreachable; restored, what was held
    goes through. Only the agents lose the API server: the kubelets keep their leases, the
    nodes and pods stay Ready, and parallel sessions on the shared lab see no outage.

    Why not stop the API server (SIGSTOP): the node controller then marks every node and pod
    NotReady once the leases look stale, and the lab kubelet never reports those pods Ready
    again (CoreDNS stays unavailable, which fails every later session's lab fixture). Why not
    drop packets in the node namespaces: the lab kubelets run there too.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self.relaying = asyncio.Event()
        self.address: tuple[str, int] = ("", 0)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-relay", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.relaying.set()
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, self.upstream[0], 0)
        )
        self.address = server.sockets[0].getsockname()[:2]
        self._ready.set()
        try:
            self.loop.run_forever()
        finally:
            server.close()
            self.loop.run_until_complete(server.wait_closed())
            self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.relaying.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self.relaying.wait()
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self.relaying.clear)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(self.relaying.set)

    def kubeconfig(self, lab: Lab, path: Path) -> Path:
        """The lab's kubeconfig with the relay as the server."""
        data = yaml.safe_load(lab.kubeconfig.read_text())
        for entry in data["clusters"]:
            entry["cluster"]["server"] = f"https://{self.address[0]}:{self.address[1]}"
        path.write_text(yaml.safe_dump(data))
        return path

    def close(self) -> None:
        self.relaying.set()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scenarios")
    apply_crds(lab)
    npapi = subprocess.run(
        ["bash", str(ROOT / "scripts" / "fetch-npapi-crds.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.strip()
    lab.kubectl("apply", "--server-side", "--force-conflicts", "-f", npapi)
    lab.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/clusternetworkpolicies.policy.networking.k8s.io",
        "--timeout=60s",
    )
    # The agents hold the lab's agents lock while they run (sessions take turns); the
    # operator runs inside that window, on a Lease of its own.
    relay = ApiRelay((config.host_address(), config.APISERVER_PORT))
    kubeconfig = relay.kubeconfig(lab, tmp / "agents.kubeconfig")
    # The last --kubeconfig wins: the agents talk to the API server through the relay.
    running = agents_running(lab, tmp, ("--kubeconfig", str(kubeconfig)))
    agents: list[AgentProcess] = []
    made = Cluster(lab, Operator(lab, tmp / "operator.log"), agents, relay)
    try:
        agents.extend(next(running))
        made.operator.lease_namespace = made.namespace()
        made.operator.start()
        wait_for("the operator leading", made.operator.leader, 60)
        yield made
    finally:
        # The operator first: nothing allocates identities for the pods going away.
        made.operator.stop()
        for namespace in made.namespaces:
            lab.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        for namespace in made.namespaces:
            lab.kubectl(
                "wait", "--for=delete", f"namespace/{namespace}", "--timeout=90s", check=False
            )
        # The pods are gone and the operator stopped: nothing recreates these identities.
        for namespace in made.namespaces:
            lab.kubectl(
                "delete", "septumidentities", "-l", f"septum.io/namespace={namespace}", check=False
            )
        for agent in agents:
            sys.stderr.write(f"--- {agent.node.name} log tail ---\n{agent.logs()[-3000:]}\n")
        next(running, None)  # stops the agents, removes their leftovers, releases the lock
        relay.close()


@pytest.fixture()
def cluster_scoped(cluster: Cluster) -> Iterator[list[tuple[str, str]]]:
    """(kind, name) of cluster-scoped objects a test made: deleted after it."""
    made: list[tuple[str, str]] = []
    yield made
    for kind, name in made:
        cluster.lab.kubectl("delete", kind, name, "--wait=true", check=False)


def _three_pods(cluster: Cluster, namespace: str) -> dict[str, Pod]:
    """srv on node 1; clients near (node 1) and far (node 2)."""
    return cluster.start_pods(
        server_pod(namespace, "srv", NODE1, {"app": "srv"}),
        client_pod(namespace, "near", NODE1, {"role": "client", "site": "near"}),
        client_pod(namespace, "far", NODE2, {"role": "client", "site": "far"}),
    )


# ---- policies: tiers, Septum policies ---------------------------------------------------


def test_admin_and_baseline_tiers_against_network_policies(
    cluster: Cluster, cluster_scoped: list[tuple[str, str]]
) -> None:
    ns = cluster.namespace()
    pods = _three_pods(cluster, ns)
    srv, clients = pods["srv"].ip, (pods["near"], pods["far"])

    def matrix(tcp: bool, udp: bool) -> dict[Case, bool]:
        want: dict[Case, bool] = {}
        for client in clients:
            want[(client, srv, "tcp")] = tcp
            want[(client, srv, "udp")] = udp
        return want

    allow_tcp = network_policy(
        ns,
        "allow-tcp",
        {"app": "srv"},
        [{"podSelector": {"matchLabels": {"role": "client"}}}],
        "tcp/8080",
    )
    cluster.apply(allow_tcp)
    expect(matrix(tcp=True, udp=False))

    # An admin-tier Deny overrides the NetworkPolicy's allow.
    admin = f"{ns}-admin"
    cluster_scoped.append(("clusternetworkpolicies", admin))
    deny_tcp = {
        "name": "deny-tcp",
        "action": "Deny",
        "from": same_namespace(ns),
        "protocols": [{"tcp": {"destinationPort": {"number": TCP_PORT}}}],
    }
    cluster.apply(cluster_network_policy(admin, "Admin", ns, {"app": "srv"}, [deny_tcp]))
    expect(matrix(tcp=False, udp=False))

    # Edited into an Accept: it overrides the NetworkPolicy's (default) deny.
    accept_udp = {
        "name": "accept-udp",
        "action": "Accept",
        "from": same_namespace(ns),
        "protocols": [{"udp": {"destinationPort": {"number": UDP_PORT}}}],
    }
    cluster.apply(cluster_network_policy(admin, "Admin", ns, {"app": "srv"}, [accept_udp]))
    expect(matrix(tcp=True, udp=True))
    cluster.delete("clusternetworkpolicies", admin)
    expect(matrix(tcp=True, udp=False))

    # A baseline Deny, and a NetworkPolicy's allow overriding it.
    cluster.delete("networkpolicy", "allow-tcp", ns)
    expect(matrix(tcp=True, udp=True))
    baseline = cluster_network_policy(
        f"{ns}-baseline",
        "Baseline",
        ns,
        {"app": "srv"},
        [
            {"name": "deny-all", "action": "Deny", "from": same_namespace(ns)},
        ],
    )
    cluster_scoped.append(("clusternetworkpolicies", baseline["metadata"]["name"]))
    cluster.apply(baseline)
    expect(matrix(tcp=False, udp=False))
    cluster.apply(allow_tcp)
    expect(matrix(tcp=True, udp=False))


def test_septum_policy_edit_narrows_a_port_and_clusterwide_deny_edited(
    cluster: Cluster, cluster_scoped: list[tuple[str, str]]
) -> None:
    ns = cluster.namespace()
    pods = _three_pods(cluster, ns)
    srv, near, far = pods["srv"].ip, pods["near"], pods["far"]
    spec = {
        "endpointSelector": {"matchLabels": {"app": "srv"}},
        "ingress": [
            {
                "fromEndpoints": [{"matchLabels": {"role": "client"}}],
                "toPorts": to_ports("tcp/8080", "udp/8081"),
            }
        ],
    }
    cluster.apply(septum_policy(ns, "clients", spec))
    expect({(c, srv, p): p != "icmp" for c in (near, far) for p in ("tcp", "udp", "icmp")})

    spec["ingress"][0]["toPorts"] = to_ports("tcp/8080")  # type: ignore[index]
    cluster.apply(septum_policy(ns, "clients", spec))
    expect({(c, srv, p): p == "tcp" for c in (near, far) for p in ("tcp", "udp")})

    # A clusterwide deny for one client only (its namespace named in both selectors), then
    # edited to deny the other.
    name = f"{ns}-deny-site"
    cluster_scoped.append(("septumclusterwidenetworkpolicies", name))

    def deny_site(site: str) -> dict[str, Any]:
        return {
            "apiVersion": "septum.io/v2",
            "kind": "SeptumClusterwideNetworkPolicy",
            "metadata": {"name": name},
            "spec": {
                "endpointSelector": {"matchLabels": {"app": "srv", POD_NS: ns}},
                "ingressDeny": [
                    {
                        "fromEndpoints": [{"matchLabels": {"site": site, POD_NS: ns}}],
                        "toPorts": to_ports("tcp/8080"),
                    }
                ],
            },
        }

    cluster.apply(deny_site("far"))
    expect({(far, srv, "tcp"): False, (near, srv, "tcp"): True})
    cluster.apply(deny_site("near"))
    expect({(far, srv, "tcp"): True, (near, srv, "tcp"): False})
    cluster.delete("septumclusterwidenetworkpolicies", name)
    expect({(far, srv, "tcp"): True, (near, srv, "tcp"): True})

    cluster.delete("septumnetworkpolicy", "clients", ns)
    expect({(c, srv, p): True for c in (near, far) for p in ("tcp", "udp", "icmp")})


# ---- labels, scale, recreate -------------------------------------------------------------


def test_namespace_and_pod_label_changes_are_reevaluated(cluster: Cluster) -> None:
    ns = cluster.namespace()
    other = cluster.namespace({"team": "red"})
    pods = cluster.start_pods(
        server_pod(ns, "srv", NODE1, {"app": "srv"}),
        client_pod(ns, "near", NODE1, {"role": "guest"}),
        client_pod(other, "far", NODE2, {"role": "client"}),
    )
    srv, near, far = pods["srv"].ip, pods["near"], pods["far"]
    cluster.apply(
        network_policy(
            ns,
            "by-labels",
            {"app": "srv"},
            [
                {"namespaceSelector": {"matchLabels": {"team": "blue"}}},
                {"podSelector": {"matchLabels": {"role": "client"}}},
            ],
            "tcp/8080",
        )
    )
    expect({(near, srv, "tcp"): False, (far, srv, "tcp"): False})

    cluster.lab.kubectl("label", "namespace", other, "team=blue", "--overwrite")
    expect({(near, srv, "tcp"): False, (far, srv, "tcp"): True})
    cluster.lab.kubectl("label", "pod", "-n", ns, "near", "role=client", "--overwrite")
    expect({(near, srv, "tcp"): True, (far, srv, "tcp"): True})

    cluster.lab.kubectl("label", "namespace", other, "team=red", "--overwrite")
    expect({(near, srv, "tcp"): True, (far, srv, "tcp"): False})
    cluster.lab.kubectl("label", "pod", "-n", ns, "near", "role=guest", "--overwrite")
    expect({(near, srv, "tcp"): False, (far, srv, "tcp"): False})


def test_scaled_up_pod_is_enforced_like_its_siblings_from_its_first_packet(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace()
    cluster.apply(
        network_policy(
            ns,
            "clients",
            {"app": "web"},
            [{"podSelector": {"matchLabels": {"role": "client"}}}],
            "tcp/8080",
        )
    )
    clients = cluster.start_pods(
        client_pod(ns, "far", NODE2, {"role": "client"}),
        client_pod(ns, "stranger", NODE1, {"role": "stranger"}),
    )
    far, stranger = clients["far"], clients["stranger"]
    cluster.apply(deployment(ns, "web", None, 1))
    first = wait_for("web's first pod", lambda: cluster.deployment_pods(ns, "web"), 120)
    assert isinstance(first, list)
    (sibling,) = first
    expect({(far, sibling.ip, "tcp"): True, (stranger, sibling.ip, "tcp"): False})

    cluster.lab.kubectl("scale", "deployment", "-n", ns, "web", "--replicas=2")

    def new_pod_ip() -> tuple[str, str] | None:
        items = cluster.lab.get_json("pods", "-n", ns, "-l", "app=web")["items"]
        for item in items:
            ip = (item.get("status") or {}).get("podIP")
            if item["metadata"]["name"] != sibling.name and ip:
                return item["metadata"]["name"], ip
        return None

    # The pod has an address only once its CNI ADD returned, which waits for its policy:
    # a stranger hammering that address from the moment it is known never gets through.
    found = wait_for("the new web pod's address", new_pod_ip, 120, interval_s=0.1)
    assert isinstance(found, tuple)
    name, ip = found
    tries, connected = connect_loop(stranger, ip, 4, 0.3)
    assert tries > 5 and connected == 0, f"stranger: {connected} of {tries} connected to {name}"
    new = wait_for("the new web pod ready", lambda: cluster.pod(ns, name), 120)
    assert isinstance(new, Pod)
    expect(
        {
            (far, new.ip, "tcp"): True,
            (stranger, new.ip, "tcp"): False,
            (far, sibling.ip, "tcp"): True,
            (stranger, sibling.ip, "tcp"): False,
        }
    )
    assert cluster.endpoint_identity(new) == cluster.endpoint_identity(sibling)


def test_recreated_pod_keeps_its_identity(cluster: Cluster) -> None:
    ns = cluster.namespace()
    labels = {"app": "solo", "tier": "x"}
    (first,) = cluster.start_pods(client_pod(ns, "solo", NODE2, labels)).values()
    number = wait_for("solo's SeptumEndpoint identity", lambda: cluster.endpoint_identity(first))
    before = cluster.identities(ns)
    assert str(number) in before, before
    assert before[str(number)]["securityLabels"]["k8s:app"] == "solo"

    cluster.delete("pod", "solo", ns)
    (second,) = cluster.start_pods(client_pod(ns, "solo", NODE2, labels)).values()
    assert second.uid != first.uid
    again = wait_for(
        "the new solo's SeptumEndpoint identity", lambda: cluster.endpoint_identity(second)
    )
    assert again == number
    assert cluster.identities(ns) == before


# ---- restarts and outages ----------------------------------------------------------------


def _guarded_server(cluster: Cluster, ns: str) -> tuple[str, Pod, Pod]:
    """srv (node 1) admitting role=client only; far (node 2) a client, stranger (node 1) not."""
    pods = cluster.start_pods(
        server_pod(ns, "srv", NODE1, {"app": "srv"}),
        client_pod(ns, "far", NODE2, {"role": "client"}),
        client_pod(ns, "stranger", NODE1, {"role": "stranger"}),
    )
    srv, far, stranger = pods["srv"].ip, pods["far"], pods["stranger"]
    cluster.apply(
        septum_policy(
            ns,
            "clients",
            {
                "endpointSelector": {"matchLabels": {"app": "srv"}},
                "ingress": [
                    {
                        "fromEndpoints": [{"matchLabels": {"role": "client"}}],
                        "toPorts": to_ports("tcp/8080"),
                    }
                ],
            },
        )
    )
    expect({(far, srv, "tcp"): True, (stranger, srv, "tcp"): False})
    return srv, far, stranger


def _operator_status(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    status = cluster.lab.get_json("snp", "-n", ns, name).get("status") or {}
    return {k: status.get(k) for k in ("conditions", "selectedEndpoints", "lastValid")}


def _valid(cluster: Cluster, ns: str, name: str) -> str | None:
    status = cluster.lab.get_json("snp", "-n", ns, name).get("status") or {}
    for condition in status.get("conditions") or []:
        if condition["type"] == "Valid":
            return str(condition["status"])
    return None


def _identity_apps(cluster: Cluster, ns: str) -> bool:
    labels = [v["securityLabels"] for v in cluster.identities(ns).values()]
    found = sorted(lab.get("k8s:app") or lab.get("k8s:role", "") for lab in labels)
    return found == ["client", "srv", "stranger"]


def test_operator_restart_changes_no_identity_policy_or_enforcement(cluster: Cluster) -> None:
    ns = cluster.namespace()
    srv, far, stranger = _guarded_server(cluster, ns)
    wait_for("clients Valid", lambda: _valid(cluster, ns, "clients") == "True")
    wait_for("srv's, far's and stranger's identities", lambda: _identity_apps(cluster, ns), 30)
    identities = cluster.identities(ns)
    status = _operator_status(cluster, ns, "clients")
    leader = cluster.operator.leader()

    background = Background((far, srv, "tcp"), (stranger, srv, "tcp"), 12)
    log_offset = cluster.operator.log_path.stat().st_size
    cluster.operator.stop()
    cluster.operator.start()
    wait_for("the restarted operator leading",
             lambda: (holder := cluster.operator.leader()) and holder != leader, 60)  # fmt: skip
    # A barrier: once the new operator validated a new policy, it has seen the old ones.
    cluster.apply(
        septum_policy(
            ns,
            "barrier",
            {
                "endpointSelector": {"matchLabels": {"app": "none"}},
                "ingress": [{}],
            },
        )
    )
    wait_for(
        "the restarted operator's first status",
        lambda: _valid(cluster, ns, "barrier") == "True",
        60,
    )
    background.check()
    assert cluster.identities(ns) == identities
    assert _operator_status(cluster, ns, "clients") == status
    with cluster.operator.log_path.open() as log:
        log.seek(log_offset)
        allocated = [line for line in log if '"identity allocated"' in line and ns in line]
    assert not allocated, allocated
    expect({(far, srv, "tcp"): True, (stranger, srv, "tcp"): False})


def _srv_policy(ns: str, name: str, rule: dict[str, Any]) -> dict[str, Any]:
    return septum_policy(
        ns,
        name,
        {
            "endpointSelector": {"matchLabels": {"app": "srv"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"role": "client"}}], **rule}],
        },
    )


def test_api_server_unreachable_for_a_minute_enforcement_kept_then_caught_up(
    cluster: Cluster,
) -> None:
    ns = cluster.namespace()
    srv, far, stranger = _guarded_server(cluster, ns)
    expect({(far, srv, "udp"): False, (far, srv, "icmp"): False})

    background = Background((far, srv, "tcp"), (stranger, srv, "tcp"), OUTAGE_S)
    cluster.relay.cut()
    try:
        # The outage itself lasts OUTAGE_S (these sleeps are its duration, not waits): a
        # policy applied meanwhile cannot reach the agents.
        time.sleep(5)
        cluster.apply(_srv_policy(ns, "during", {"toPorts": to_ports("udp/8081")}))
        time.sleep(OUTAGE_S - 10)
        assert reachability([(far, srv, "udp")]) == {_describe((far, srv, "udp")): False}, (
            "a policy applied during the outage is enforced: the agents were not cut off"
        )
    finally:
        cluster.relay.restore()
    background.check()
    # Caught up: the policy applied during the outage, and one applied right after.
    started = time.monotonic()
    expect({(far, srv, "udp"): True}, 60)
    caught_up_s = time.monotonic() - started
    cluster.apply(
        _srv_policy(ns, "after", {"icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}]})
    )
    expect({(far, srv, "icmp"): True, (far, srv, "tcp"): True, (stranger, srv, "tcp"): False})
    assert caught_up_s < 30, f"the agents caught up {caught_up_s:.0f}s after the API returned"


# ---- invalid policies --------------------------------------------------------------------


def test_malformed_policies_are_refused_naming_the_field(cluster: Cluster) -> None:
    ns = cluster.namespace()

    def refused(rule: dict[str, Any]) -> str:
        obj = septum_policy(ns, "bad", {"endpointSelector": {}, "ingress": [rule]})
        out = cluster.try_apply(obj)
        assert out.returncode != 0, f"accepted: {rule}"
        return out.stderr

    stderr = refused({"toPorts": [{"ports": [{"port": "70000", "protocol": "TCP"}]}]})
    assert "spec.ingress[0].toPorts[0].ports[0].port" in stderr and "70000" in stderr, stderr
    stderr = refused({"fromEntities": ["galaxy"]})
    assert "spec.ingress[0].fromEntities[0]" in stderr and "galaxy" in stderr, stderr
    stderr = refused({"fromEndpointz": [{}]})
    assert 'unknown field "spec.ingress[0].fromEndpointz"' in stderr, stderr
    assert cluster.lab.get_json("snp", "-n", ns)["items"] == []

    # The upstream ClusterNetworkPolicy schema and the clusterwide Septum policy's, likewise.
    rule = {"name": "r", "action": "Deny", "from": same_namespace(ns),
            "protocols": [{"tcp": {"destinationPort": {"number": 70000}}}]}  # fmt: skip
    out = cluster.try_apply(cluster_network_policy(f"{ns}-bad", "Admin", ns, {}, [rule]))
    assert out.returncode != 0, "a ClusterNetworkPolicy with port 70000 accepted"
    assert "spec.ingress[0].protocols[0].tcp.destinationPort.number" in out.stderr, out.stderr
    out = cluster.try_apply({
        "apiVersion": "septum.io/v2",
        "kind": "SeptumClusterwideNetworkPolicy",
        "metadata": {"name": f"{ns}-bad"},
        "spec": {"endpointSelector": {}, "ingressz": [{}]},
    })  # fmt: skip
    assert out.returncode != 0, "a clusterwide policy with an unknown field accepted"
    assert 'unknown field "spec.ingressz"' in out.stderr, out.stderr


def test_invalid_edit_keeps_the_last_valid_version_enforced(cluster: Cluster) -> None:
    ns = cluster.namespace()
    pods = cluster.start_pods(
        server_pod(ns, "srv", NODE1, {"app": "srv"}),
        client_pod(ns, "far", NODE2, {"role": "client"}),
    )
    srv, far = pods["srv"].ip, pods["far"]
    clients = {"matchLabels": {"role": "client"}}
    target = {"matchLabels": {"app": "srv"}}
    cluster.apply(
        septum_policy(
            ns,
            "edited",
            {
                "endpointSelector": target,
                "ingress": [{"fromEndpoints": [clients], "toPorts": to_ports("tcp/8080")}],
            },
        ),
        septum_policy(
            ns,
            "ping",
            {
                "endpointSelector": target,
                "ingress": [
                    {
                        "fromEndpoints": [clients],
                        "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}],
                    }
                ],
            },
        ),
    )
    v1 = {(far, srv, "tcp"): True, (far, srv, "udp"): False, (far, srv, "icmp"): True}
    expect(v1)

    # v2 would admit UDP too, but its HTTP path does not compile: the schema accepts it,
    # the engine refuses it.
    broken_http = {
        "ports": [{"port": "8080", "protocol": "TCP"}],
        "rules": {"http": [{"method": "GET", "path": "("}]},
    }
    cluster.apply(
        septum_policy(
            ns,
            "edited",
            {
                "endpointSelector": target,
                "ingress": [
                    {"fromEndpoints": [clients], "toPorts": [broken_http, *to_ports("udp/8081")]}
                ],
            },
        )
    )
    wait_for("edited Valid=False", lambda: _valid(cluster, ns, "edited") == "False")
    # Held for a while: agents apply a valid edit within a second or two (next step).
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        got = reachability(list(v1))
        assert got == {_describe(c): v for c, v in v1.items()}, got
    assert _valid(cluster, ns, "ping") == "True"
    # The server's agent restarted: it enforces the last valid version from the start
    # (status.lastValid), never the invalid spec nor nothing.
    (server_agent,) = [a for a in cluster.agents if a.node.name == NODE1]
    server_agent.stop()
    server_agent.start()
    server_agent.wait_ready(60)
    got = reachability(list(v1))
    assert got == {_describe(c): v for c, v in v1.items()}, got

    cluster.apply(
        septum_policy(
            ns,
            "edited",
            {
                "endpointSelector": target,
                "ingress": [
                    {"fromEndpoints": [clients], "toPorts": to_ports("tcp/8080", "udp/8081")}
                ],
            },
        )
    )
    expect({(far, srv, "tcp"): True, (far, srv, "udp"): True, (far, srv, "icmp"): True})


# ---- flows -------------------------------------------------------------------------------


def _hubble_flows(agent: AgentProcess, namespace: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            str(HUBBLE),
            "observe",
            "--server",
            f"unix://{agent.observer_socket}",
            "--last",
            "2000",
            "-o",
            "json",
            "--namespace",
            namespace,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line)["flow"] for line in out.stdout.splitlines() if line]


@pytest.mark.skipif(not HUBBLE.is_file(), reason="the hubble CLI is not built")
def test_flows_name_pods_workloads_and_policies_on_both_nodes(cluster: Cluster) -> None:
    ns = cluster.namespace()
    cluster.apply(
        network_policy(
            ns,
            "web-ingress",
            {"app": "web"},
            [{"podSelector": {"matchLabels": {"role": "client"}}}],
            "tcp/8080",
        ),
        septum_policy(
            ns,
            "clients-egress",
            {
                "endpointSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]},
                "egress": [
                    {
                        "toEndpoints": [{"matchLabels": {"app": "web"}}],
                        "toPorts": to_ports("tcp/8080"),
                    }
                ],
            },
        ),
        deployment(ns, "web", NODE1, 1),
    )
    clients = cluster.start_pods(
        client_pod(ns, "far", NODE2, {"role": "client"}),
        client_pod(ns, "stranger", NODE2, {"role": "stranger"}),
    )
    far, stranger = clients["far"], clients["stranger"]
    web = wait_for("web's pod", lambda: cluster.deployment_pods(ns, "web"), 120)
    assert isinstance(web, list)
    (web_pod,) = web
    expect({(far, web_pod.ip, "tcp"): True, (stranger, web_pod.ip, "tcp"): False})
    node1, node2 = (next(a for a in cluster.agents if a.node.name == n) for n in (NODE1, NODE2))

    def last(flows: list[dict[str, Any]], source: str, verdict: str, by: str) -> Any:
        found = [
            f
            for f in flows
            if f.get("verdict") == verdict
            and f.get("source", {}).get("pod_name") == source
            and f.get("destination", {}).get("pod_name") == web_pod.name
            and f.get(by)
        ]
        return found[-1] if found else None

    def at_node1() -> Any:
        flows = _hubble_flows(node1, ns)
        pair = (
            last(flows, "far", "FORWARDED", "ingress_allowed_by"),
            last(flows, "stranger", "DROPPED", "ingress_denied_by"),
        )
        return pair if all(pair) else None

    def at_node2() -> Any:
        return last(_hubble_flows(node2, ns), "far", "FORWARDED", "egress_allowed_by")

    found = wait_for("an allowed and a dropped flow at node 1", at_node1, 30)
    assert isinstance(found, tuple)
    allowed, dropped = found
    egress = wait_for("an allowed egress flow at node 2", at_node2, 30)
    assert isinstance(egress, dict)
    workload = [{"name": "web", "kind": "Deployment"}]
    for flow in (allowed, dropped, egress):
        assert flow["source"]["namespace"] == ns and flow["destination"]["namespace"] == ns
        assert flow["destination"]["workloads"] == workload, flow["destination"]
    assert [p["name"] for p in allowed["ingress_allowed_by"]] == ["web-ingress"]
    assert allowed["ingress_allowed_by"][0]["kind"] == "NetworkPolicy"
    (denied_by,) = dropped["ingress_denied_by"]
    assert denied_by["name"] == "web-ingress" and denied_by["namespace"] == ns, denied_by
    assert [p["name"] for p in egress["egress_allowed_by"]] == ["clients-egress"]
    assert egress["egress_allowed_by"][0]["kind"] == "SeptumNetworkPolicy"
    assert egress["node_name"].endswith(NODE2) and allowed["node_name"].endswith(NODE1)
