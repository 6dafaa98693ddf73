"""Paths inside one lab's state directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateDir:
    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig" / "admin.conf"

    def kubeconfig(self, user: str) -> Path:
        return self.root / "kubeconfig" / f"{user}.conf"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    @property
    def manifest(self) -> Path:
        return self.root / "lab.json"
