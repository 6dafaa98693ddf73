"""Bringing a lab up, describing it and taking it down again without a trace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]  # no stubs pinned

from septum.lab import addons, config, controlplane, dnsready, network, nodestate, procs, supervisor
from septum.lab.binaries import Binaries, ensure_built, locate
from septum.lab.config import NodeSpec
from septum.lab.errors import NoLabError, NotRootError, PortInUseError, StartupError
from septum.lab.layout import StateDir

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Lab:
    state: StateDir
    nodes: list[NodeSpec]
    binaries: Binaries

    @property
    def kubeconfig(self) -> Path:
        return self.state.admin_kubeconfig

    def kubectl(
        self, *args: str, input_text: str | None = None, check: bool = True, timeout_s: float = 60
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and proc.returncode != 0:
            raise StartupError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def crd_names(self) -> set[str]:
        """The CRDs the API server has now (tests remove only the ones they added: the lab is
        shared, and deleting a CRD deletes every object of its kind, other sessions' too)."""
        listed = self.kubectl("get", "crd", "-o", "name").stdout.split()
        return {name.split("/", 1)[-1] for name in listed}


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRootError(
            "the lab needs root (network namespaces, bridges, iptables): rerun with sudo"
        )


def _manifest(state: StateDir) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(state.manifest.read_text())
        return data
    except (OSError, ValueError):
        return None


def _healthy(state: StateDir) -> bool:
    running = {p.name for p in procs.read(state.run) if procs.alive(p)}
    wanted = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
    manifest = _manifest(state)
    if manifest is None:
        return False
    for node in config.nodes(int(manifest["nodes"])):
        wanted |= {f"kubelet-{node.name}", f"kube-proxy-{node.name}"}
    return wanted <= running


def is_running(state_root: Path | None = None) -> bool:
    """True when a lab is up and all of its processes are alive."""
    return _healthy(StateDir(state_root or config.default_state_dir()))


def _check_ports() -> None:
    wanted = {port: what for what, port in config.HOST_PORTS.items()}
    for conn in psutil.net_connections(kind="inet"):
        if conn.status != psutil.CONN_LISTEN or not conn.laddr:
            continue
        if conn.laddr.port in wanted:
            owner = ""
            if conn.pid:
                try:
                    owner = f" by {psutil.Process(conn.pid).name()} (pid {conn.pid})"
                except psutil.Error:
                    pass
            raise PortInUseError(
                f"port {conn.laddr.port} ({wanted[conn.laddr.port]}) is already in use{owner}: "
                "stop that process or run 'septum lab down' if it is a lab left running"
            )


def up(
    nodes: int = 2,
    state_root: Path | None = None,
    progress: Progress = _quiet,
    ready_timeout_s: float = 60,
) -> Lab:
    """Starts a lab with ``nodes`` nodes (idempotent: a healthy running lab is reused)."""
    require_root()
    if nodes < 1 or nodes > 200:
        raise StartupError(f"--nodes {nodes}: must be between 1 and 200")
    state = StateDir(state_root or config.default_state_dir())
    binaries = ensure_built(progress)
    specs = config.nodes(nodes)
    lab = Lab(state, specs, binaries)
    manifest = _manifest(state)
    if manifest is not None and _healthy(state):
        if int(manifest["nodes"]) == nodes:
            progress("lab already running")
            return lab
        raise StartupError(
            f"a lab with {manifest['nodes']} nodes is running; 'septum lab down' first "
            f"to start one with {nodes}"
        )
    if manifest is not None or network.list_netns() or network.list_links():
        progress("found a stale lab (crashed or half-started): cleaning it up")
        down(state.root)
    _check_ports()
    try:
        _start(lab, progress, ready_timeout_s)
    except BaseException:
        progress("start failed: cleaning up")
        logs = state.logs
        keep = Path(f"{state.root}.failed-logs")
        shutil.rmtree(keep, ignore_errors=True)
        if logs.is_dir():
            shutil.copytree(logs, keep)
        down(state.root)
        raise
    return lab


def _start(lab: Lab, progress: Progress, ready_timeout_s: float) -> None:
    state, specs = lab.state, lab.nodes
    state.root.mkdir(parents=True, exist_ok=True)
    state.manifest.write_text(
        json.dumps(
            {
                "nodes": len(specs),
                "created": time.time(),
                "etc_netns_existed": config.NETNS_ETC_DIR.exists(),
                "netns_dir_existed": config.NETNS_DIR.exists(),
            }
        )
    )
    progress(
        f"creating the lab network ({config.BRIDGE} {config.LAB_NETWORK}) and "
        f"{len(specs)} node namespaces"
    )
    network.create_bridge()
    for node in specs:
        network.create_node(node, specs)
    progress("generating certificates and kubeconfigs")
    controlplane.ensure_pki(state, specs)
    progress(f"starting etcd and kube-apiserver on {config.apiserver_url()}")
    controlplane.start(state, lab.binaries)
    progress("installing CoreDNS (kube-system/coredns behind kube-dns)")
    lab.kubectl("apply", "-f", "-", input_text=addons.to_yaml(addons.coredns_manifests()))
    for node in specs:
        node_dir = state.node_dir(node.name)
        node_dir.mkdir(parents=True, exist_ok=True)
        kp_conf = node_dir / "kube-proxy.yaml"
        kp_conf.write_text(addons.kube_proxy_config(str(state.kubeconfig("kube-proxy")), node.name))
        procs.spawn(
            state.run,
            state.logs,
            f"kube-proxy-{node.name}",
            [
                "ip",
                "netns",
                "exec",
                node.netns,
                str(lab.binaries.kube_proxy),
                f"--config={kp_conf}",
            ],
        )
        procs.spawn(
            state.run,
            state.logs,
            f"kubelet-{node.name}",
            [
                sys.executable,
                "-m",
                "septum.lab.kubelet",
                f"--state={state.root}",
                f"--node={node.index}",
            ],
        )
    progress(f"waiting for {len(specs)} nodes to be Ready")
    wait_nodes_ready(lab, ready_timeout_s)
    progress("waiting for cluster DNS to answer")
    wait_dns_ready(lab, ready_timeout_s)
    procs.spawn(
        state.run,
        state.logs,
        supervisor.NAME,
        [sys.executable, "-m", "septum.lab.supervisor", f"--state={state.root}"],
    )


def wait_nodes_ready(lab: Lab, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no nodes yet"
    want = {n.name for n in lab.nodes}
    while time.monotonic() < deadline:
        dead = [p.name for p in procs.read(lab.state.run) if not procs.alive(p)]
        if dead:
            raise StartupError(
                f"{dead[0]} exited during start-up; see {lab.state.logs / (dead[0] + '.log')}"
            )
        out = lab.kubectl("get", "nodes", "-o", "json", check=False)
        if out.returncode == 0:
            ready = set()
            for item in json.loads(out.stdout).get("items", []):
                for cond in item.get("status", {}).get("conditions", []):
                    if cond["type"] == "Ready" and cond["status"] == "True":
                        ready.add(item["metadata"]["name"])
            if want <= ready:
                return
            last = f"ready: {sorted(ready)}"
        time.sleep(0.2)
    raise StartupError(
        f"nodes not Ready after {timeout_s:.0f}s ({last}); see the kubelet logs in {lab.state.logs}"
    )


def wait_dns_ready(lab: Lab, timeout_s: float) -> None:
    """Until CoreDNS answers through the kube-dns Service from every node: a pod's first lookup
    right after `lab up` must work (the Deployment is Ready a few seconds before it does)."""
    deadline = time.monotonic() + timeout_s
    pending = list(lab.nodes)
    while pending:
        node = pending[0]
        asked = subprocess.run(
            ["ip", "netns", "exec", node.netns, sys.executable, "-m", "septum.lab.dnsready",
             dnsready.QUERY_NAME, config.DNS_SERVICE_IP],
            capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        if asked.returncode == 0:
            pending.pop(0)
            continue
        if time.monotonic() >= deadline:
            raise StartupError(
                f"cluster DNS ({config.DNS_SERVICE_IP}) does not answer "
                f"{dnsready.QUERY_NAME} from {node.name} after {timeout_s:.0f}s; "
                f"see the coredns pod's log (kubectl -n kube-system logs deploy/coredns)"
            )
        time.sleep(0.3)


def current(state_root: Path | None = None) -> Lab:
    state = StateDir(state_root or config.default_state_dir())
    manifest = _manifest(state)
    if manifest is None:
        raise NoLabError("no lab is running: start one with 'septum lab up'")
    return Lab(state, config.nodes(int(manifest["nodes"])), locate(require=False))


def status(state_root: Path | None = None) -> dict[str, Any]:
    lab = current(state_root)
    processes = {p.name: procs.alive(p) for p in procs.read(lab.state.run)}
    restarts = {name: supervisor.restarts(lab.state.run, name) for name in processes}
    nodes: list[dict[str, str]] = []
    out = lab.kubectl("get", "nodes", "-o", "json", check=False, timeout_s=10)
    if out.returncode == 0:
        for item in json.loads(out.stdout).get("items", []):
            ready = next(
                (c["status"] for c in item["status"].get("conditions", []) if c["type"] == "Ready"),
                "Unknown",
            )
            nodes.append(
                {
                    "name": item["metadata"]["name"],
                    "ready": ready,
                    "podCIDR": item["spec"].get("podCIDR", ""),
                    "address": item["status"]["addresses"][0]["address"],
                }
            )
    return {
        "kubeconfig": str(lab.kubeconfig),
        "apiserver": config.apiserver_url(),
        "processes": processes,
        "restarts": restarts,
        "nodes": nodes,
        "state_dir": str(lab.state.root),
    }


def down(state_root: Path | None = None) -> None:
    """Removes every process, namespace, link, route, mountpoint and file the lab created,
    and what Septum's pods left on its nodes (septum.lab.nodestate)."""
    require_root()
    state = StateDir(state_root or config.default_state_dir())
    manifest = _manifest(state) or {}
    # The supervisor first, or it would start again what is being stopped; the pid files are
    # read again after it is gone, since it may have just restarted a process under a new pid.
    procs.stop([p for p in procs.read(state.run) if p.name == supervisor.NAME])
    procs.stop([p for p in procs.read(state.run) if p.name != supervisor.NAME])
    # A process of this lab that no pid file names any more (a restart racing an earlier
    # down, a start that failed half-way) would keep the lab's ports: its command line
    # names the state directory, which makes it ours.
    procs.stop(procs.naming(state.root))
    stop_port_forwards(state)
    network.delete_all()
    # After the node namespaces' processes are gone: an agent pod killed there leaves these.
    nodestate.remove_septum_leftovers(state)
    _remove_mountpoints(state)
    shutil.rmtree(state.root, ignore_errors=True)
    if manifest.get("etc_netns_existed") is False:
        _rmdir(config.NETNS_ETC_DIR)
    # /var/run/netns itself is left alone: other tools share that mount point.


def stop_port_forwards(state: StateDir) -> None:
    """Stops every ``septum port-forward --background`` started while this lab was up."""
    procs.stop(procs.read(state.port_forwards))


def _remove_mountpoints(state: StateDir) -> None:
    created: set[str] = set()
    for f in state.root.glob("nodes/*/mountpoints"):
        created |= {line for line in f.read_text().splitlines() if line}
    for path in sorted(created, key=len, reverse=True):
        p = Path(path)
        if p.is_dir():
            _rmdir(p)
        elif p.is_file() and p.stat().st_size == 0:
            p.unlink()


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
