"""Egress through Services on the lab (issue 13): what a user would try first.

A pod may send only to pods `class=deathstar` on TCP 80 (and to CoreDNS). Through kube-proxy
it reaches the deathstar Service's ClusterIP and its DNS name, and not the xwing Service's
ClusterIP: the policy is decided on the backends behind each ClusterIP, as Kubernetes says,
although the datapath sees the packet before kube-proxy's DNAT.

Reuses the join scenarios' module cluster (operator and one agent per node, from this tree);
the probe runs an HTTP GET in the client pod's network namespace (`ip netns exec`, so the
pod's resolv.conf: its name lookups go to the kube-dns ClusterIP, which the policy must let
through as well).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from septum.lab.pytest_plugin import wait_for

from .test_join_scenarios_lab import (  # noqa: F401 - `cluster` is the module's fixture
    AGNHOST,
    NODE1,
    NODE2,
    NS_NAME,
    Cluster,
    Pod,
    _pod,
    client_pod,
    cluster,
)

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

# GET http://<host>/hostname: prints "ok <body>" or "fail <error>" (DNS names resolve through
# the pod's own resolv.conf: the kube-dns ClusterIP).
HTTP_GET = r"""
import http.client, sys
host = sys.argv[1]
try:
    connection = http.client.HTTPConnection(host, 80, timeout=2)
    connection.request("GET", "/hostname")
    print("ok", connection.getresponse().read().decode())
except Exception as err:
    print("fail", repr(err)); sys.exit(1)
"""


def http_server(namespace: str, name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    """agnhost serving HTTP on port 80, the container port named "http"."""
    container = {
        "name": "srv",
        "image": AGNHOST,
        "args": ["netexec", "--http-port=80"],
        "ports": [{"containerPort": 80, "name": "http"}],
        "readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 1},
    }
    return _pod(namespace, name, node, labels, container)


def service(namespace: str, name: str, selector: dict[str, str]) -> dict[str, Any]:
    """Port 80 to the pods' container port named "http" (resolved per backend)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector,
            "ports": [{"name": "web", "port": 80, "protocol": "TCP", "targetPort": "http"}],
        },
    }


def egress_to_deathstar(namespace: str) -> dict[str, Any]:
    """The client may reach deathstar pods on TCP 80, and CoreDNS: nothing else."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "to-deathstar", "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"org": "empire"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": {"class": "deathstar"}}}],
                    "ports": [{"protocol": "TCP", "port": 80}],
                },
                {
                    "to": [
                        {
                            "namespaceSelector": {"matchLabels": {NS_NAME: "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
            ],
        },
    }


def http_get(client: Pod, host: str) -> str | None:
    """The body of GET http://<host>/hostname from the client pod, None when it failed."""
    out = subprocess.run(
        ["ip", "netns", "exec", client.netns, sys.executable, "-c", HTTP_GET, host],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if out.returncode != 0 or not out.stdout.startswith("ok "):
        return None
    return out.stdout[3:].strip()


def cluster_ip(lab_cluster: Cluster, namespace: str, name: str) -> str:
    return str(lab_cluster.lab.get_json("service", "-n", namespace, name)["spec"]["clusterIP"])


def test_egress_policy_applies_to_the_pods_behind_a_cluster_ip(cluster: Cluster) -> None:  # noqa: F811
    ns = cluster.namespace()
    pods = cluster.start_pods(
        http_server(ns, "deathstar", NODE1, {"class": "deathstar"}),
        http_server(ns, "xwing", NODE1, {"class": "xwing"}),
        client_pod(ns, "tiefighter", NODE2, {"org": "empire"}),
    )
    cluster.apply(
        service(ns, "deathstar", {"class": "deathstar"}),
        service(ns, "xwing", {"class": "xwing"}),
    )
    tiefighter = pods["tiefighter"]
    deathstar_ip = cluster_ip(cluster, ns, "deathstar")
    xwing_ip = cluster_ip(cluster, ns, "xwing")
    # before any policy both ClusterIPs answer (kube-proxy and the EndpointSlices are ready)
    for ip, name in ((deathstar_ip, "deathstar"), (xwing_ip, "xwing")):
        wait_for(f"{name}'s ClusterIP answering", lambda ip=ip: http_get(tiefighter, ip), 60)

    cluster.apply(egress_to_deathstar(ns))
    dns_name = f"deathstar.{ns}.svc.cluster.local"

    def outcome() -> dict[str, str | None]:
        return {
            "deathstar ClusterIP": http_get(tiefighter, deathstar_ip),
            "deathstar DNS name": http_get(tiefighter, dns_name),
            "xwing ClusterIP": http_get(tiefighter, xwing_ip),
            "xwing pod IP": http_get(tiefighter, pods["xwing"].ip),
        }

    wait_for("the egress policy decided on the Services' backends", lambda: Outcome(outcome()), 60)


WANT = {
    "deathstar ClusterIP": "deathstar",
    "deathstar DNS name": "deathstar",
    "xwing ClusterIP": None,
    "xwing pod IP": None,
}


class Outcome(dict[str, str | None]):
    """What each probe got: falsy until it is `WANT` (wait_for names the last one seen)."""

    def __bool__(self) -> bool:
        return dict(self) == WANT
