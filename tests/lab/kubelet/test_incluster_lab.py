"""Pods as the Helm chart's agent is one, on the session's lab: Septum's image with a command
using $(NODE_NAME), the in-cluster environment and service-account token, the API server through
the kubernetes Service (from a node's namespace and from the pod network), a securityContext
accepted, and termination (SIGTERM, then SIGKILL once the grace period is over)."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.lab import config
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

SEPTUM_IMAGE = "ghcr.io/example/septum:dev"
# What the agent does at start: in-cluster configuration, then API calls with its token.
IN_CLUSTER = """
import asyncio, json, os, pathlib, sys
from kubernetes_asyncio import client, config

SA = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount")

async def main():
    config.load_incluster_config()
    async with client.ApiClient() as api:
        review = await client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        try:
            await client.CoreV1Api(api).list_namespaced_pod(SA.joinpath("namespace").read_text())
            listed = 200
        except client.ApiException as err:
            listed = err.status
    print(json.dumps({
        "argv": sys.argv[1:],
        "host": os.environ["KUBERNETES_SERVICE_HOST"],
        "port": os.environ["KUBERNETES_SERVICE_PORT"],
        "files": sorted(p.name for p in SA.iterdir() if not p.name.startswith(".")),
        "namespace": SA.joinpath("namespace").read_text(),
        "user": review.status.user_info.username,
        "list_pods": listed,
    }))

asyncio.run(main())
"""


@pytest.fixture()
def namespace(lab: Lab, lab_namespace: Callable[[str], str]) -> str:
    name = lab_namespace("slab-ic")
    lab.kubectl("create", "serviceaccount", "-n", name, "prober")
    return name


def _apply(lab: Lab, *objects: dict[str, Any]) -> None:
    lab.kubectl("apply", "-f", "-", input_text=yaml.safe_dump_all(objects))


def _pod(namespace: str, name: str, node: int, container: dict[str, Any], **spec: Any) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": f"slab-node{node}"},
            "containers": [{"name": name, **container}],
            **spec,
        },
    }


def _phase(lab: Lab, namespace: str, name: str) -> str:
    pod = lab.get_json("pod", "-n", namespace, name)
    return str(pod.get("status", {}).get("phase", ""))


@pytest.mark.parametrize("host_network", [True, False], ids=["hostNetwork", "pod-network"])
def test_an_agent_like_pod_gets_its_node_name_in_cluster_env_and_token(
    lab: Lab, namespace: str, host_network: bool
) -> None:
    agent_like = {
        "image": SEPTUM_IMAGE,
        "command": ["python3", "-c", IN_CLUSTER],
        "args": ["--node", "$(NODE_NAME)", "--kept=$$(NODE_NAME)"],
        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        # Not enforced in the lab (everything runs as root), but accepted as the chart has it.
        "securityContext": {
            "privileged": True,
            "capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN", "BPF", "PERFMON"]},
        },
    }
    _apply(
        lab,
        _pod(
            namespace,
            "agent",
            2,
            agent_like,
            serviceAccountName="prober",
            hostNetwork=host_network,
            dnsPolicy="ClusterFirstWithHostNet" if host_network else "ClusterFirst",
            restartPolicy="Never",
        ),
    )
    wait_for(
        "the agent-like pod to finish",
        lambda: _phase(lab, namespace, "agent") in ("Succeeded", "Failed"),
        timeout_s=90,
    )
    logs = lab.kubectl("logs", "-n", namespace, "agent").stdout
    assert _phase(lab, namespace, "agent") == "Succeeded", logs
    seen = json.loads(logs.strip().splitlines()[-1])
    assert seen["argv"] == ["--node", "slab-node2", "--kept=$(NODE_NAME)"]
    assert (seen["host"], seen["port"]) == (config.KUBERNETES_SERVICE_IP, "443")
    assert seen["files"] == ["ca.crt", "namespace", "token"]
    assert seen["namespace"] == namespace
    # The token authenticates as the pod's service account, through the kubernetes Service.
    assert seen["user"] == f"system:serviceaccount:{namespace}:prober"
    assert seen["list_pods"] == 403  # no Role grants it: RBAC really applies


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_deletion_sends_sigterm_then_sigkill_after_the_grace_period(
    lab: Lab, namespace: str
) -> None:
    # The container's files are the host's: the trap writes where the test can read.
    # ("$$$$" is the shell's "$$": Kubernetes turns "$$" into "$" in a command.)
    record = Path("/tmp") / f"slab-term-{uuid.uuid4().hex}"
    stubborn = (
        f"echo $$$$ > {record}.pid; "
        f"trap 'date +%s.%N >> {record}' TERM; "
        "while true; do sleep 0.1; done"
    )
    tidy = f"echo $$$$ > {record}.tidy.pid; trap 'echo cleaned up > {record}.tidy; exit 0' TERM; "
    tidy += "while true; do sleep 0.1; done"
    grace_s = 4
    _apply(
        lab,
        _pod(namespace, "stubborn", 1, {"image": "busybox", "command": ["sh", "-c", stubborn]},
             terminationGracePeriodSeconds=grace_s),
        _pod(namespace, "tidy", 1, {"image": "busybox", "command": ["sh", "-c", tidy]},
             terminationGracePeriodSeconds=60),
    )  # fmt: skip
    try:
        for name, pid_file in (("stubborn", f"{record}.pid"), ("tidy", f"{record}.tidy.pid")):
            wait_for(f"{name} Running", lambda n=name: _phase(lab, namespace, n) == "Running")
            wait_for(f"{name}'s pid", lambda p=pid_file: Path(p).exists())
        stubborn_pid = int(Path(f"{record}.pid").read_text())
        tidy_pid = int(Path(f"{record}.tidy.pid").read_text())
        deleted_at = time.time()
        lab.kubectl("delete", "pod", "-n", namespace, "stubborn", "tidy", "--wait=false")
        wait_for("tidy to exit on SIGTERM", lambda: not _alive(tidy_pid), timeout_s=15)
        assert Path(f"{record}.tidy").read_text() == "cleaned up\n"
        assert time.time() - deleted_at < 15, "a process that exits is not held for its grace"
        wait_for("stubborn to be killed", lambda: not _alive(stubborn_pid), timeout_s=30)
        killed_at = time.time()
        terms = [float(t) for t in record.read_text().split()]
        assert len(terms) == 1, terms
        assert terms[0] - deleted_at < 5, "SIGTERM comes at once"
        # SIGKILL only once the grace period is over (the poll adds up to its interval).
        assert grace_s - 0.5 <= killed_at - terms[0] <= grace_s + 3
    finally:
        # The pods first (their traps write these files when they go), then the files.
        lab.kubectl("delete", "pod", "-n", namespace, "stubborn", "tidy", "--ignore-not-found",
                    "--wait=true", "--timeout=60s", check=False)  # fmt: skip
        for suffix in ("", ".pid", ".tidy", ".tidy.pid"):
            Path(f"{record}{suffix}").unlink(missing_ok=True)
