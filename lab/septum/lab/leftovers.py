"""What the lab may leave on a machine, listed so that a test can assert none of it remains."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs pinned

from septum.lab import config, network, nodestate
from septum.lab.layout import StateDir

_LAB_ADDRESSES = ("10.213.", "10.214.")
# Client tools cached beside the lab's binaries: a run of one (`helm template` in a chart render
# test, the Cilium peer's loader in a bench) belongs to whoever started it, not to the lab, unless
# it names the lab's state (its kubeconfig) in its arguments or environment. Counting every run
# made a lab test fail its teardown while anyone else on the machine ran helm.
_CLIENT_TOOLS = frozenset({"helm", "kubectl", "ciliumpeer"})
# Mountpoints the lab's own pods and tests create on the host (removed by ``lab down``).
_MOUNTPOINTS = (
    "/etc/coredns",
    "/run/secrets/kubernetes.io",
    "/var/run/secrets/kubernetes.io",
    "/slab-e2e-work",
    "/etc/slab-e2e-cfg",
    "/etc/slab-e2e-secret",
)


def _lab_processes() -> list[str]:
    """Processes running a lab binary or lab module (not, say, a Go build writing the binaries)."""
    bin_dir = str(config.cache_dir() / "bin") + "/"
    modules = {"septum.lab.kubelet", "septum.lab.supervisor"}
    # Anything naming the state directory is the lab's too (a background port-forward).
    state = str(config.default_state_dir())
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            argv = list(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if proc.info["status"] == psutil.STATUS_ZOMBIE or not argv:
            continue
        names_state = any(arg == state or state + "/" in arg for arg in argv)
        lab_binary = argv[0].startswith(bin_dir)
        if lab_binary and Path(argv[0]).name in _CLIENT_TOOLS:
            lab_binary = _environ_names(proc, state)
        if lab_binary or modules & set(argv) or names_state:
            found.append(f"{proc.info['pid']} {' '.join(argv)[:120]}")
    return found


def _environ_names(proc: psutil.Process, state: str) -> bool:
    """Whether a process's environment points into the lab's state (KUBECONFIG=<state>/...)."""
    try:
        environ = proc.environ()
    except psutil.Error:
        return False
    return any(value == state or state + "/" in value for value in environ.values())


def _lines(argv: list[str], needles: tuple[str, ...]) -> list[str]:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    return [line for line in out.splitlines() if any(n in line for n in needles)]


def leftovers() -> dict[str, list[str]]:
    """Everything lab-made currently on the machine (empty lists when the lab is fully down)."""
    bpffs = Path("/sys/fs/bpf")
    return {
        "netns": network.list_netns(),
        "links": network.list_links(),
        "processes": _lab_processes(),
        "routes": _lines(["ip", "route", "show"], _LAB_ADDRESSES),
        "iptables": _lines(["iptables-save"], (*_LAB_ADDRESSES, "slab", "KUBE-")),
        "nftables": _lines(["nft", "list", "ruleset"], (*_LAB_ADDRESSES, "slab", "KUBE-")),
        "etc_netns": sorted(str(p) for p in config.NETNS_ETC_DIR.glob(f"{config.PREFIX}*")),
        "mountpoints": [m for m in _MOUNTPOINTS if Path(m).exists()],
        "bpf_pins": sorted(str(p) for p in bpffs.glob(f"{config.PREFIX}*"))
        if bpffs.is_dir()
        else [],
        "septum_on_nodes": [
            str(p) for p in nodestate.septum_leftovers(StateDir(config.default_state_dir()))
        ],
        "state": [str(config.default_state_dir())] if config.default_state_dir().exists() else [],
    }
