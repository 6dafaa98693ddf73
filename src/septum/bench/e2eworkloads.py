"""`septum bench e2e`'s workloads: the pods it runs and the policy it flips (pure manifests)."""

from __future__ import annotations

from typing import Any

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
PAUSE = "registry.k8s.io/pause:3.10"
SERVER_PORT = 8080
OTHER_PORT = 8081  # what the "deny" version admits instead: nothing listens there over TCP
SERVERS_PER_NODE = 2
CLIENTS_PER_NODE = 2
POLICY = "e2e-probe"


def deployment(
    name: str, namespace: str, node: str, replicas: int, labels: dict[str, str], container: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "nodeSelector": {"kubernetes.io/hostname": node},
                    "containers": [container],
                },
            },
        },
    }


def workloads(namespace: str, nodes: list[str], pods: int) -> list[dict[str, Any]]:
    idle = pods - len(nodes) * (SERVERS_PER_NODE + CLIENTS_PER_NODE)
    server = {
        "name": "srv",
        "image": AGNHOST,
        "args": ["netexec", f"--http-port={SERVER_PORT}"],
        "readinessProbe": {"tcpSocket": {"port": SERVER_PORT}, "periodSeconds": 1},
    }
    client = {"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}
    out = []
    for i, node in enumerate(nodes):
        short = node.rsplit("-", 1)[-1]
        out.append(
            deployment(
                f"srv-{short}",
                namespace,
                node,
                SERVERS_PER_NODE,
                {"app": "e2e-srv", "node": short},
                server,
            )
        )
        out.append(
            deployment(
                f"cli-{short}",
                namespace,
                node,
                CLIENTS_PER_NODE,
                {"role": "e2e-client", "node": short},
                client,
            )
        )
        replicas = idle // len(nodes) + (1 if i < idle % len(nodes) else 0)
        if replicas:
            out.append(
                deployment(
                    f"idle-{short}",
                    namespace,
                    node,
                    replicas,
                    {"app": "e2e-idle", "node": short},
                    {"name": "p", "image": PAUSE},
                )
            )
    return out


def policy(namespace: str, allow: bool) -> dict[str, Any]:
    """Isolates the servers; admits the clients on the servers' port (allow) or another (deny)."""
    port = SERVER_PORT if allow else OTHER_PORT
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "e2e-srv"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"role": "e2e-client"}}}],
                    "ports": [{"protocol": "TCP", "port": port}],
                }
            ],
        },
    }


def pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status", {})
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
    )
