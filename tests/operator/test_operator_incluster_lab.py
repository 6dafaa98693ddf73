"""`septum operator` as the chart's Deployment runs it, against the lab's API server.

In-cluster: no --kubeconfig, no --namespace. The process sees what a pod's container sees, in
a private mount namespace of its own: a bound service-account token, the CA and the namespace
file bind-mounted at /var/run/secrets/kubernetes.io/serviceaccount, and
KUBERNETES_SERVICE_HOST/PORT. Both clients log in with that token (kubernetes_asyncio for the
operator's writes, kopf for its watches), and the Lease lands in the service account's
namespace. Its owner is a Deployment with no replicas (a marker): SIGTERM while it exists
keeps identities and Lease; SIGTERM once it is deleted deletes every SeptumIdentity and the
Lease.

Deleting every SeptumIdentity is cluster-wide, so this test holds the lab's agents lock and
waits until no other operator runs on the lab (parallel sessions share it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from septum.bench.labagents import agents_lock
from septum.lab.lab import Lab
from septum.lab.pytest_plugin import wait_for

pytestmark = [pytest.mark.privileged, pytest.mark.lab]

ROOT = Path(__file__).resolve().parents[2]
SEPTUM = str(Path(sys.executable).parent / "septum")
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# The API server where the host reaches it (a pod's would be the kubernetes Service).
API_SERVER = {"KUBERNETES_SERVICE_HOST": "10.213.0.1", "KUBERNETES_SERVICE_PORT": "16443"}
OWNER = "septum-operator"
WRAPPER = 'mount --bind "$SA" /run/secrets/kubernetes.io/serviceaccount && exec "$@"'


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _other_operators() -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if "operator" in argv and any(a.endswith("/septum") for a in argv):
            found.append(f"{proc.info['pid']} {' '.join(argv)[:100]}")
    return found


@dataclass
class InClusterOperator:
    namespace: str
    sa_files: Path
    log_path: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = _free_port()
        argv = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", WRAPPER, "sh",
            SEPTUM, "operator", f"--health-port={self.port}", "--log-format=json",
            "--identity-gc-interval=10m", f"--owner-deployment={self.namespace}/{OWNER}",
        ]  # fmt: skip
        env = {**os.environ, **API_SERVER, "SA": str(self.sa_files), "PYTHONUNBUFFERED": "1"}
        env.pop("POD_NAMESPACE", None)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def readyz(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return dict(json.load(r))
        except OSError as err:
            return {"ready": False, "error": str(err)}

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def messages(self) -> list[str]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                found.append(str(json.loads(line).get("msg")))
            except ValueError:
                continue
        return found


@dataclass
class Env:
    lab: Lab
    namespace: str
    operator: InClusterOperator

    def identities(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.lab.get_json("septumidentities").get("items", [])
        return items

    def lease(self) -> dict[str, Any] | None:
        out = self.lab.kubectl(
            "get", "lease", "-n", self.namespace, "septum-operator", "-o", "json", check=False
        )
        return json.loads(out.stdout) if out.returncode == 0 else None


def _make_service_account(lab: Lab, namespace: str, files: Path) -> None:
    """A ServiceAccount bound to cluster-admin (the chart's RBAC is the chart's test) and a
    bound token for it from the TokenRequest API, as the kubelet gets one."""
    lab.kubectl("create", "serviceaccount", "-n", namespace, "septum-operator")
    lab.kubectl(
        "create", "clusterrolebinding", namespace, "--clusterrole=cluster-admin",
        f"--serviceaccount={namespace}:septum-operator",
    )  # fmt: skip
    token = lab.kubectl("create", "token", "-n", namespace, "septum-operator", "--duration=2h")
    files.mkdir()
    (files / "token").write_text(token.stdout.strip())
    (files / "ca.crt").write_bytes((lab.state.pki / "ca.crt").read_bytes())
    (files / "namespace").write_text(namespace)


def _owner_deployment(namespace: str) -> dict[str, Any]:
    labels = {"app": "septum-owner-marker"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": OWNER, "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "m", "image": "busybox", "command": ["true"]}]},
            },
        },
    }


def _pending_pod(namespace: str) -> dict[str, Any]:
    """A pod no scheduler places: it needs an identity, and costs nothing."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace, "labels": {"app": "incluster"}},
        "spec": {
            "schedulerName": "op-no-such-scheduler",
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }


@pytest.fixture(scope="module")
def env(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("incluster")
    lab.kubectl("apply", "-f", f"{(ROOT / 'crds').resolve()}/")
    lab.kubectl("wait", "--for=condition=Established", "crd/septumidentities.septum.io")
    namespace = f"op-{uuid.uuid4().hex[:8]}"
    lab.kubectl("create", "namespace", namespace)
    made: list[Path] = []
    path = SERVICE_ACCOUNT_DIR
    while not path.exists():  # the lab's pods make it (CoreDNS's token); else we do
        made.append(path)
        path = path.parent
    for directory in reversed(made):
        directory.mkdir()
    operator = InClusterOperator(namespace, tmp / "sa", tmp / "operator.log")
    try:
        with agents_lock(lab):
            wait_for("no other operator on the lab", lambda: not _other_operators(), 600, 2)
            _make_service_account(lab, namespace, operator.sa_files)
            lab.kubectl("apply", "-f", "-", input_text=json.dumps(_owner_deployment(namespace)))
            operator.start()
            try:
                yield Env(lab, namespace, operator)
            finally:
                operator.stop()
    finally:
        lab.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        lab.kubectl("delete", "clusterrolebinding", namespace, "--ignore-not-found", check=False)
        for directory in made:
            try:
                directory.rmdir()
            except OSError:
                continue  # a lab pod's mountpoint since: lab down removes it
        sys.stderr.write(f"--- operator log ---\n{operator.log_path.read_text()[-4000:]}\n")


def _leader(env: Env) -> None:
    wait_for(
        "the in-cluster operator ready and leading",
        lambda: (r := env.operator.readyz()).get("ready") and r.get("leader"),
        60,
    )


def test_in_cluster_credentials_and_namespace(env: Env) -> None:
    _leader(env)
    lease = env.lease()  # in the service account's namespace: no --namespace was given
    assert lease is not None and lease["spec"]["holderIdentity"]
    env.lab.kubectl("apply", "-f", "-", input_text=json.dumps(_pending_pod(env.namespace)))
    wait_for(
        "an identity for the pod (kubernetes_asyncio writes it, kopf's watch saw the pod)",
        lambda: [
            i for i in env.identities()
            if i["metadata"].get("labels", {}).get("septum.io/namespace") == env.namespace
        ],
        60,
    )  # fmt: skip


def test_sigterm_with_the_deployment_in_place_keeps_identities(env: Env) -> None:
    _leader(env)
    assert env.operator.stop() == 0
    assert any("keeping identities and the lease" in m for m in env.operator.messages())
    assert env.identities()
    lease = env.lease()
    assert lease is not None and not lease["spec"].get("holderIdentity")  # released
    env.operator.start()
    _leader(env)


def test_sigterm_once_the_deployment_is_deleted_deletes_identities_and_lease(env: Env) -> None:
    _leader(env)
    assert env.identities()
    env.lab.kubectl("delete", "deployment", "-n", env.namespace, OWNER, "--wait=true")
    assert env.operator.stop() == 0
    messages = env.operator.messages()
    assert any(m.startswith(f"owner deployments/{env.namespace}/{OWNER} gone") for m in messages)
    assert "uninstall: SeptumIdentities and the Lease deleted" in messages
    assert env.identities() == []  # deleted before the process exited
    assert env.lease() is None
