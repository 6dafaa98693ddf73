"""The workloads the lab's end-to-end tests deploy into their namespace, as manifests."""

from __future__ import annotations

from typing import Any

NS = "slab-e2e"
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
SEPTUM_SCRIPT = """
import os, pathlib, septum.lab
print(pathlib.Path('/etc/slab-e2e-cfg/greeting').read_text())
print(pathlib.Path('/etc/slab-e2e-secret/token').read_text())
print(os.environ['TOKEN'], os.environ['POD_IP'] != '', os.environ['KUBERNETES_SERVICE_HOST'])
print(os.environ['WEB_SERVICE_PORT'], os.environ['WEB_PORT_80_TCP_PROTO'])
"""


def pod_manifest(
    name: str, image: str, command: list[str] | None = None, node: int | None = None, **spec: Any
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image}
    if command:
        container["command"] = command
    container.update(spec.pop("container", {}))
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": 1,
        **spec,
    }
    if node is not None:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": f"slab-node{node}"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": pod_spec,
    }


def service_manifest(name: str, port: int, target: int, selector: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "selector": {"app": selector},
            "ports": [{"port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def manifests() -> list[dict[str, Any]]:
    web_labels = {"app": "web"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": web_labels},
                "template": {
                    "metadata": {"labels": web_labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "topologySpreadConstraints": [
                            {
                                "maxSkew": 1,
                                "topologyKey": "kubernetes.io/hostname",
                                "whenUnsatisfiable": "DoNotSchedule",
                                "labelSelector": {"matchLabels": web_labels},
                            }
                        ],
                        "containers": [
                            {
                                "name": "web",
                                "image": AGNHOST,
                                "args": ["netexec", "--http-port=8080"],
                                "readinessProbe": {
                                    "httpGet": {"path": "/healthz", "port": 8080},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        },
        service_manifest("web", 80, 8080, "web"),
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "idle", "namespace": NS},
            "spec": {
                "selector": {"matchLabels": {"app": "idle"}},
                "template": {
                    "metadata": {"labels": {"app": "idle"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "idle", "image": "busybox"}],
                    },
                },
            },
        },
        pod_manifest("client", "docker.io/curlimages/curl:8.10.1", ["sleep", "infinity"], node=1),
        pod_manifest("deathstar", "docker.io/cilium/starwars", node=2),
        service_manifest("deathstar", 80, 80, "deathstar"),
        pod_manifest("crasher", "busybox", ["sh", "-c", "echo run-$$; exit 3"]),
        pod_manifest(
            "ticker",
            "busybox",
            ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.3; done"],
        ),
        service_manifest("flaky", 80, 8000, "flaky"),
        pod_manifest("ghost", "example.invalid/no-such-image:1.0"),
        pod_manifest("hostnet", "busybox", hostNetwork=True, node=2),
        pod_manifest(
            "inited",
            "busybox",
            ["sh", "-c", "cat /slab-e2e-work/note; sleep infinity"],
            container={"volumeMounts": [{"name": "work", "mountPath": "/slab-e2e-work"}]},
            volumes=[{"name": "work", "emptyDir": {}}],
            initContainers=[
                {
                    "name": "prepare",
                    "image": "busybox",
                    "command": ["sh", "-c", "echo prepared by init > /slab-e2e-work/note"],
                    "volumeMounts": [{"name": "work", "mountPath": "/slab-e2e-work"}],
                }
            ],
        ),
        pod_manifest(
            "unlively",
            "busybox",
            ["sleep", "infinity"],
            container={
                "livenessProbe": {
                    "exec": {"command": ["sh", "-c", "exit 1"]},
                    "periodSeconds": 1,
                    "failureThreshold": 2,
                }
            },
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "septum-cfg", "namespace": NS},
            "data": {"greeting": "hello from a ConfigMap"},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "septum-secret", "namespace": NS},
            "stringData": {"token": "s3cret"},
        },
        # Septum's own image runs Septum's Python with the pod's command, env and volumes.
        pod_manifest(
            "septum",
            "ghcr.io/example/septum:dev",
            ["python3", "-c", SEPTUM_SCRIPT],
            restartPolicy="Never",
            container={
                "env": [
                    {
                        "name": "TOKEN",
                        "valueFrom": {"secretKeyRef": {"name": "septum-secret", "key": "token"}},
                    },
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/etc/slab-e2e-cfg"},
                    {"name": "sec", "mountPath": "/etc/slab-e2e-secret"},
                ],
            },
            volumes=[
                {"name": "cfg", "configMap": {"name": "septum-cfg"}},
                {"name": "sec", "secret": {"secretName": "septum-secret"}},
            ],
        ),
    ]
