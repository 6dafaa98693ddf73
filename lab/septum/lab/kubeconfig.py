"""Kubeconfig files for the lab's users and components (client certificates, embedded paths)."""

from __future__ import annotations

from pathlib import Path

import yaml


def write(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "septum-lab", "cluster": {"server": server, "certificate-authority": str(ca)}}
        ],
        "users": [
            {"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}
        ],
        "contexts": [{"name": "septum-lab", "context": {"cluster": "septum-lab", "user": user}}],
        "current-context": "septum-lab",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
    return path
