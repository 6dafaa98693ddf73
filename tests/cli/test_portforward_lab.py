"""`septum port-forward` to a real Service on the session's lab (agnhost netexec behind it):
the pod answers through the local port, a replaced pod is found again, and a background
forwarder lives in the lab's state directory, where ``septum lab down`` stops it."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.lab import lab as lab_mod
from septum.lab import procs
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

SEPTUM = str(Path(sys.executable).parent / "septum")
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"


def _web(namespace: str) -> list[dict[str, Any]]:
    labels = {"app": "web"}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "web",
                                "image": AGNHOST,
                                "args": ["netexec", "--http-port=8080"],
                                "ports": [{"name": "http", "containerPort": 8080}],
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
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "selector": labels,
                # The Service's port 80 is the pod's named port 8080: the forwarder must map it.
                "ports": [{"name": "web", "port": 80, "targetPort": "http"}],
            },
        },
    ]


@pytest.fixture()
def web(lab: Lab, lab_namespace: Callable[[str], str]) -> str:
    namespace = lab_namespace("slab-pf")
    lab.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(_web(namespace)))
    _ready_pod(lab, namespace)
    return namespace


def _ready_pod(lab: Lab, namespace: str, other_than: str = "") -> str:
    def ready() -> str | None:
        for pod in lab.get_json("pods", "-n", namespace, "-l", "app=web")["items"]:
            name = str(pod["metadata"]["name"])
            conditions = pod.get("status", {}).get("conditions", [])
            deleting = pod["metadata"].get("deletionTimestamp")
            if (
                name != other_than
                and not deleting
                and any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            ):
                return name
        return None

    name = wait_for("a ready web pod", ready, timeout_s=90)
    assert isinstance(name, str)
    return name


def _hostname(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as response:
        return str(response.read().decode())


def _port_of(line: str) -> int:
    # "Forwarding from 127.0.0.1:43121 -> 80"
    assert line.startswith("Forwarding from 127.0.0.1:"), line
    return int(line.split()[2].rsplit(":", 1)[1])


def test_forwards_to_the_service_and_follows_a_replaced_pod(lab: Lab, web: str) -> None:
    forwarder = subprocess.Popen(
        [SEPTUM, "port-forward", "--kubeconfig", str(lab.kubeconfig), "-n", web, "svc/web", ":80"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forwarder.stdout is not None
        port = _port_of(forwarder.stdout.readline().strip())
        first = _ready_pod(lab, web)
        assert _hostname(port) == first
        lab.kubectl("delete", "pod", "-n", web, first, "--wait=false")
        second = _ready_pod(lab, web, other_than=first)
        wait_for(f"{second} answering through the forwarder", lambda: _hostname(port) == second)
    finally:
        forwarder.terminate()
        _, err = forwarder.communicate(timeout=10)
    assert forwarder.returncode == 0, err


def test_a_background_forwarder_lives_in_the_lab_and_lab_down_stops_it(lab: Lab, web: str) -> None:
    argv = [SEPTUM, "port-forward", "--kubeconfig", str(lab.kubeconfig), "-n", web,
            "svc/web", "0:web", "--background"]  # fmt: skip
    started = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    pid_file = lab.state.port_forwards / f"{web}_web_0-web.pid"
    try:
        assert started.returncode == 0, started.stderr
        assert str(pid_file) in started.stderr
        port = _port_of(started.stdout.strip())
        assert _hostname(port) == _ready_pod(lab, web)
        [proc] = [p for p in procs.read(lab.state.port_forwards) if p.name == pid_file.stem]
        assert procs.alive(proc)
        again = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert (
            again.returncode == 1
            and f"already forwarding in the background (pid {proc.pid}" in again.stderr
        )
        # What `septum lab down` does with it (the session's lab itself stays up).
        lab_mod.stop_port_forwards(lab.state)
        assert not procs.alive(proc)
    finally:
        subprocess.run([*argv[:-1], "--stop"], capture_output=True, timeout=30, check=False)
    assert not pid_file.exists() and not pid_file.with_suffix(".log").exists()
