"""hostPath volumes under /sys on the session's lab: a pod's /sys/fs/bpf is the host's bpffs (as
the agent's DaemonSet mounts it), whether the pod is on the host network or not, and nothing of
it outlives the pod. The mechanism is tested without a cluster in test_attachmount.py."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

BPFFS = Path("/sys/fs/bpf")


@pytest.fixture()
def namespace(lab_namespace: Callable[[str], str]) -> str:
    return lab_namespace("slab-hp")


def _agent_like_pod(namespace: str, host_network: bool) -> dict[str, Any]:
    """The agent DaemonSet's /sys volumes, with its mountPropagation."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bpf", "namespace": namespace},
        "spec": {
            "hostNetwork": host_network,
            "nodeSelector": {"kubernetes.io/hostname": "slab-node1"},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "bpf",
                    "image": "busybox",
                    "command": ["sleep", "infinity"],
                    "volumeMounts": [
                        {
                            "name": "bpf-maps",
                            "mountPath": "/sys/fs/bpf",
                            "mountPropagation": "HostToContainer",
                        },
                        {"name": "cgroup", "mountPath": "/sys/fs/cgroup", "readOnly": True},
                    ],  # fmt: skip
                }
            ],
            "volumes": [
                {
                    "name": "bpf-maps",
                    "hostPath": {"path": "/sys/fs/bpf", "type": "DirectoryOrCreate"},
                },
                {"name": "cgroup", "hostPath": {"path": "/sys/fs/cgroup", "type": "Directory"}},
            ],
        },
    }


def _exec(lab: Lab, namespace: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    # kubectl exec enters the container's mount namespace (septum lab exec only its network's).
    return lab.kubectl("exec", "-n", namespace, "bpf", "--", *cmd, check=False)


def _pin_map(path: Path) -> list[str]:
    return ["bpftool", "map", "create", str(path), "type", "array",
            "key", "4", "value", "4", "entries", "1", "name", "slabtest"]  # fmt: skip


def _processes_in_mount_namespace(ns_link: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "mnt") == ns_link:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _bpf_mounts_here() -> list[str]:
    return [
        line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " bpf " in line
    ]


@pytest.mark.parametrize("host_network", [True, False], ids=["hostNetwork", "pod-network"])
def test_a_pods_bpffs_is_the_hosts_and_goes_with_the_pod(
    lab: Lab, namespace: str, host_network: bool
) -> None:
    tag = uuid.uuid4().hex[:12]
    host_pin, pod_pin = BPFFS / f"slabtest-host-{tag}", BPFFS / f"slabtest-pod-{tag}"
    mounts_before = _bpf_mounts_here()
    lab.kubectl(
        "apply", "-f", "-", input_text=yaml.safe_dump(_agent_like_pod(namespace, host_network))
    )
    try:
        wait_for("the pod Running", lambda: lab.get_json("pod", "-n", namespace, "bpf")
                 .get("status", {}).get("phase") == "Running")  # fmt: skip
        fs = _exec(
            lab, namespace, "stat", "-f", "-c", "%T", "/sys/fs/bpf", "/sys/fs/cgroup/unified"
        )
        assert fs.stdout.split() == ["bpf_fs", "cgroup2fs"], fs.stderr
        # Made on the host after the pod started: seen in the pod, and the other way round.
        subprocess.run(_pin_map(host_pin), check=True, capture_output=True)
        assert _exec(lab, namespace, "ls", str(host_pin)).stdout.strip() == str(host_pin)
        made = _exec(lab, namespace, *_pin_map(pod_pin))
        assert made.returncode == 0, made.stderr
        assert pod_pin.exists()
        # The cgroup tree is mounted read-only as asked.
        wrote = _exec(lab, namespace, "mkdir", f"/sys/fs/cgroup/unified/slabtest-{tag}")
        assert wrote.returncode != 0 and "Read-only file system" in wrote.stderr
        mount_ns = _exec(lab, namespace, "readlink", "/proc/self/ns/mnt").stdout.strip()
        assert mount_ns.startswith("mnt:[") and mount_ns != os.readlink("/proc/self/ns/mnt")
        assert _processes_in_mount_namespace(mount_ns), "the container is in that namespace"
        lab.kubectl("delete", "pod", "-n", namespace, "bpf", "--wait=true", "--timeout=60s")
        # The pod's mount namespace, and the trees attached in it, went with its last process.
        wait_for("no process left in the pod's mount namespace",
                 lambda: not _processes_in_mount_namespace(mount_ns), timeout_s=15)  # fmt: skip
        assert _bpf_mounts_here() == mounts_before
        assert pod_pin.exists(), "pins outlive the pod (they are the host's bpffs)"
    finally:
        host_pin.unlink(missing_ok=True)
        pod_pin.unlink(missing_ok=True)
