"""Where the Go-built binaries live: ~/.cache/septum/bin/<component>-<version>/ (lab/gobuild)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from septum.lab.config import cache_dir
from septum.lab.errors import BinariesMissingError

_GOBUILD_DIR = Path(__file__).resolve().parents[2] / "gobuild"
_VERSIONS_FILE = _GOBUILD_DIR / "versions.env"


def versions() -> dict[str, str]:
    """The pinned versions from lab/gobuild/versions.env (KEY=VALUE lines)."""
    pinned: dict[str, str] = {}
    for line in _VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pinned[key.strip()] = value.strip()
    return pinned


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kube_proxy: Path
    kubectl: Path
    agnhost: Path
    etcd: Path
    coredns: Path
    helm: Path

    @property
    def kubernetes_version(self) -> str:
        return versions()["KUBERNETES_VERSION"]


def locate(require: bool = True) -> Binaries:
    """Paths of the cached binaries; raises BinariesMissingError naming the fix when absent."""
    pinned = versions()
    bin_dir = cache_dir() / "bin"
    k8s = bin_dir / f"kubernetes-{pinned['KUBERNETES_VERSION']}"
    found = Binaries(
        kube_apiserver=k8s / "kube-apiserver",
        kube_controller_manager=k8s / "kube-controller-manager",
        kube_scheduler=k8s / "kube-scheduler",
        kube_proxy=k8s / "kube-proxy",
        kubectl=k8s / "kubectl",
        agnhost=k8s / "agnhost",
        etcd=k8s / "etcd",
        coredns=bin_dir / f"coredns-{pinned['COREDNS_VERSION']}" / "coredns",
        helm=bin_dir / f"helm-{pinned['HELM_VERSION']}" / "helm",
    )
    if require:
        missing = [str(p) for p in vars(found).values() if not Path(p).is_file()]
        if missing:
            raise BinariesMissingError(
                f"lab binaries not built ({missing[0]} missing): run 'make gobuild' "
                "(or lab/gobuild/build.sh); a failed build leaves its log in "
                f"{cache_dir() / 'logs'}"
            )
    return found


def ensure_built(progress: Callable[[str], None]) -> Binaries:
    """The cached binaries, building them first (lab/gobuild/build.sh) when any is missing."""
    try:
        return locate()
    except BinariesMissingError:
        pass
    script = _GOBUILD_DIR / "build.sh"
    progress(f"building the lab's Go binaries with {script} (15-40 min cold on 2 cores)")
    proc = subprocess.Popen(
        [str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    last = ""
    with proc.stdout:
        for line in proc.stdout:
            last = line.strip() or last
            if line.startswith("septum gobuild:"):
                progress(line.strip().removeprefix("septum gobuild: "))
    if proc.wait() != 0:
        raise BinariesMissingError(
            f"the Go build failed ({last}); fix the cause and rerun 'make gobuild'"
        )
    return locate()
