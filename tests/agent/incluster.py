"""Running `septum agent` in the lab as the chart's DaemonSet runs it: the in-cluster service
account, NODE_NAME, and the node's bpffs mounted at /sys/fs/bpf.

The process sees what a pod's container sees, in a private mount namespace of its own (the
host's mounts are not touched): the service account's token, CA and namespace bind-mounted
at /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT set to the
`kubernetes` Service (kube-proxy in the node's namespace takes it to the API server), and,
after `ip netns exec` (which mounts a fresh /sys without bpffs, as a container's /sys is),
the node's bpffs bind-mounted at /sys/fs/bpf as the chart's hostPath volume does.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from septum.lab.lab import Lab

from .lab_agents import RUN_DIR, SEPTUM, AgentProcess

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
KUBERNETES_SERVICE = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}

# $1 the node's netns; $SA the service account files; $HOST_BPFFS a directory where the
# host's bpffs stays reachable once `ip netns exec` has replaced /sys.
WRAPPER = r"""
set -e
mount --bind "$SA" /run/secrets/kubernetes.io/serviceaccount
if [ -n "$HOST_BPFFS" ]; then mount --bind /sys/fs/bpf "$HOST_BPFFS"; fi
netns=$1; shift
exec ip netns exec "$netns" sh -c '
if [ -n "$HOST_BPFFS" ]; then mount --bind "$HOST_BPFFS" /sys/fs/bpf; fi
exec "$@"' sh "$@"
"""


@dataclass(frozen=True)
class ServiceAccount:
    namespace: str
    name: str
    files: Path  # token, ca.crt, namespace: what the kubelet projects into a pod


def make_service_account(lab: Lab, namespace: str, name: str, files: Path) -> ServiceAccount:
    """A ServiceAccount bound to cluster-admin (the chart's RBAC is the chart's test), and a
    bound token for it from the TokenRequest API, as the kubelet gets one."""
    lab.kubectl("create", "serviceaccount", "-n", namespace, name)
    lab.kubectl(
        "create", "clusterrolebinding", f"{namespace}-{name}", "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:{name}",
    )  # fmt: skip
    token = lab.kubectl("create", "token", "-n", namespace, name, "--duration=2h").stdout
    files.mkdir(parents=True, exist_ok=True)
    (files / "token").write_text(token.strip())
    (files / "ca.crt").write_bytes((lab.state.pki / "ca.crt").read_bytes())
    (files / "namespace").write_text(namespace)
    return ServiceAccount(namespace, name, files)


def delete_service_account(lab: Lab, account: ServiceAccount) -> None:
    binding = f"{account.namespace}-{account.name}"
    lab.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)


def mountpoint_dirs() -> list[Path]:
    """Make the service-account mountpoint if the lab's pods have not (CoreDNS's has);
    returns the directories made, for the caller to remove."""
    made: list[Path] = []
    path = SERVICE_ACCOUNT_DIR
    while not path.exists():
        made.append(path)
        path = path.parent
    for directory in reversed(made):
        directory.mkdir()
    return made


def remove_dirs(made: list[Path]) -> None:
    for directory in made:
        try:
            directory.rmdir()
        except OSError:
            continue  # in use since (a lab pod's mountpoint now): the lab removes it


@dataclass
class InClusterAgent(AgentProcess):
    """An AgentProcess started as the DaemonSet starts it: no --node, no --kubeconfig."""

    account: ServiceAccount | None = None
    host_bpffs: Path | None = None  # None: no bpffs mounted (a chart that forgot it)

    def start(self) -> None:
        assert self.account is not None
        argv = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", WRAPPER, "sh",
            self.node.netns, SEPTUM, "agent",
            "--cni-conf-dir", str(self.cni_dir / "net.d"),
            "--cni-bin-dir", str(self.cni_dir / "bin"),
            "--state-dir", str(self.state_dir),
            "--run-dir", str(RUN_DIR),
            "--ct-gc-interval", "5",
            "--log-format", "json",
            *self.extra,
        ]  # fmt: skip
        env = {
            **os.environ,
            **KUBERNETES_SERVICE,
            "NODE_NAME": self.node.name,
            "SA": str(self.account.files),
            "HOST_BPFFS": str(self.host_bpffs or ""),
        }
        if self.host_bpffs is not None:
            self.host_bpffs.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()


def log_lines(agent: AgentProcess) -> list[dict[str, object]]:
    lines = []
    for line in agent.logs().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines
