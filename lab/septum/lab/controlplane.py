"""Certificates, kubeconfigs and the control-plane processes (etcd, API server, controllers)."""

from __future__ import annotations

import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from septum.lab import audit, config, kubeconfig, pki, procs
from septum.lab.binaries import Binaries
from septum.lab.config import NodeSpec
from septum.lab.errors import StartupError
from septum.lab.layout import StateDir

# (kubeconfig user, certificate CN, organization) for components talking to the API server.
_COMPONENT_USERS = [
    ("admin", "kubernetes-admin", "system:masters"),
    ("controller-manager", "system:kube-controller-manager", None),
    ("scheduler", "system:kube-scheduler", None),
    ("kube-proxy", "system:kube-proxy", "system:node-proxier"),
]


def ensure_pki(state: StateDir, nodes: list[NodeSpec]) -> None:
    """Creates the CAs, serving/client certificates and kubeconfigs unless they already exist."""
    d = state.pki
    d.mkdir(parents=True, exist_ok=True)
    if (d / "ca.crt").exists():
        ca = pki.load_issuer(d, "ca")
    else:
        ca = pki.make_ca(d, "ca", "septum-lab-ca")
        front = pki.make_ca(d, "front-proxy-ca", "septum-lab-front-proxy-ca")
        pki.issue(front, d, "front-proxy-client", "front-proxy-client", client=True)
        pki.make_service_account_key(d)
        pki.issue(
            ca,
            d,
            "apiserver",
            "kube-apiserver",
            server=True,
            dns_names=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{config.CLUSTER_DOMAIN}",
                "localhost",
            ),
            ip_addresses=(config.host_address(), config.KUBERNETES_SERVICE_IP, "127.0.0.1"),
        )
        pki.issue(
            ca,
            d,
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            "system:masters",
            client=True,
        )
        for user, cn, org in _COMPONENT_USERS:
            pki.issue(ca, d, user, cn, org, client=True)
            kubeconfig.write(
                state.kubeconfig(user),
                config.apiserver_url(),
                d / "ca.crt",
                d / f"{user}.crt",
                d / f"{user}.key",
                cn,
            )
    for node in nodes:
        if (d / f"{node.name}.crt").exists():
            continue
        # The node's client identity for the Node authorizer, and the kubelet's serving cert.
        pki.issue(ca, d, node.name, f"system:node:{node.name}", "system:nodes", client=True)
        pki.issue(
            ca,
            d,
            f"{node.name}-serving",
            node.name,
            server=True,
            dns_names=(node.name,),
            ip_addresses=(node.ip,),
        )
        kubeconfig.write(
            state.kubeconfig(node.name),
            config.apiserver_url(),
            d / "ca.crt",
            d / f"{node.name}.crt",
            d / f"{node.name}.key",
            f"system:node:{node.name}",
        )


def start(state: StateDir, binaries: Binaries) -> None:
    p = state.pki
    spawn = _spawner(state)
    spawn(
        "etcd",
        [
            str(binaries.etcd),
            "--name=slab",
            f"--data-dir={state.etcd_data}",
            f"--listen-client-urls=http://127.0.0.1:{config.ETCD_CLIENT_PORT}",
            f"--advertise-client-urls=http://127.0.0.1:{config.ETCD_CLIENT_PORT}",
            f"--listen-peer-urls=http://127.0.0.1:{config.ETCD_PEER_PORT}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{config.ETCD_PEER_PORT}",
            f"--initial-cluster=slab=http://127.0.0.1:{config.ETCD_PEER_PORT}",
            # A throwaway lab: durability across power loss is not worth the fsync latency.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    spawn(
        "kube-apiserver",
        [
            str(binaries.kube_apiserver),
            f"--advertise-address={config.host_address()}",
            f"--bind-address={config.host_address()}",
            f"--secure-port={config.APISERVER_PORT}",
            f"--etcd-servers=http://127.0.0.1:{config.ETCD_CLIENT_PORT}",
            f"--service-cluster-ip-range={config.SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--client-ca-file={p / 'ca.crt'}",
            f"--tls-cert-file={p / 'apiserver.crt'}",
            f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={p / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-issuer=https://kubernetes.default.svc.{config.CLUSTER_DOMAIN}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
            "--enable-aggregator-routing=true",
            "--profiling=false",
            *audit.apiserver_flags(state),
        ],
    )
    wait_ready(state, "/readyz", timeout_s=60)
    kcm = state.kubeconfig("controller-manager")
    spawn(
        "kube-controller-manager",
        [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={kcm}",
            f"--authentication-kubeconfig={kcm}",
            f"--authorization-kubeconfig={kcm}",
            "--bind-address=127.0.0.1",
            f"--secure-port={config.CONTROLLER_MANAGER_PORT}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            f"--root-ca-file={p / 'ca.crt'}",
            f"--service-account-private-key-file={p / 'sa.key'}",
            f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
            "--use-service-account-credentials=true",
            # Nodes bring their own pod CIDRs (the lab routes them before the API server exists).
            "--allocate-node-cidrs=false",
            f"--cluster-cidr={config.CLUSTER_CIDR}",
            f"--service-cluster-ip-range={config.SERVICE_CIDR}",
            "--leader-elect=false",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--concurrent-replicaset-syncs=10",
        ],
    )
    sched = state.kubeconfig("scheduler")
    spawn(
        "kube-scheduler",
        [
            str(binaries.kube_scheduler),
            f"--kubeconfig={sched}",
            f"--authentication-kubeconfig={sched}",
            f"--authorization-kubeconfig={sched}",
            "--bind-address=127.0.0.1",
            f"--secure-port={config.SCHEDULER_PORT}",
            "--leader-elect=false",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
        ],
    )


def _spawner(state: StateDir):  # type: ignore[no-untyped-def]
    def spawn(name: str, argv: list[str]) -> procs.Proc:
        return procs.spawn(state.run, state.logs, name, argv)

    return spawn


def ssl_context(state: StateDir, user: str = "admin") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(state.pki / "ca.crt"))
    ctx.load_cert_chain(str(state.pki / f"{user}.crt"), str(state.pki / f"{user}.key"))
    return ctx


def get(state: StateDir, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(config.apiserver_url() + path)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=ssl_context(state)) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        return int(err.code), bytes(err.read())


def wait_ready(state: StateDir, path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            status, body = get(state, path, timeout_s=2)
            if status == 200:
                return
            last = f"HTTP {status}: {body.decode(errors='replace')[-300:]}"
        except OSError as err:
            last = str(err)
        time.sleep(0.2)
    log = state.logs / "kube-apiserver.log"
    raise StartupError(
        f"kube-apiserver not ready at {config.apiserver_url()}{path} after {timeout_s:.0f}s "
        f"({last.strip().splitlines()[-1] if last.strip() else last}); see {log}"
    )


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
