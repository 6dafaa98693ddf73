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

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def audit_log(self) -> Path:
        return self.audit_dir / "audit.log"

    @property
    def audit_policy(self) -> Path:
        return self.audit_dir / "policy.yaml"

    @property
    def port_forwards(self) -> Path:
        """Pid files and logs of ``septum port-forward --background`` (stopped by lab down)."""
        return self.root / "port-forward"
