"""Pod volumes materialised as directories, later bind-mounted at each container's mountPath.

ConfigMaps, Secrets, projected service-account tokens and the downward API are written from the
API (the Node authorizer lets a node read exactly what its pods reference); emptyDir is a fresh
directory and hostPath the host's own path, created or checked as its ``type`` says.
"""

from __future__ import annotations

import base64
import shutil
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from septum.lab.errors import LabError
from septum.lab.kubelet.api import ApiClient
from septum.lab.kubelet.downward import field_value
from septum.lab.kubelet.objects import JSON

# Called with a path the kubelet is about to create on the host and whether it is a directory
# (the kubelet records it, so that ``lab down`` removes it again).
Creating = Callable[[Path, bool], None]

# hostPath types that must already exist, and the test their path must pass.
_HOST_PATH_CHECKS: dict[str, Callable[[int], bool]] = {
    "Directory": stat.S_ISDIR,
    "File": stat.S_ISREG,
    "Socket": stat.S_ISSOCK,
    "CharDevice": stat.S_ISCHR,
    "BlockDevice": stat.S_ISBLK,
}


class HostPathError(LabError):
    """A hostPath volume's path is missing or not of the ``type`` the volume names."""


@dataclass(frozen=True)
class VolumeMount:
    """One of a container's volumeMounts, resolved to the host path it mounts."""

    source: Path
    mount_path: str
    read_only: bool = False
    # Kubernetes' mountPropagation: None (its default), HostToContainer or Bidirectional.
    propagation: str = "None"


def _write(target: Path, rel: str, data: bytes, mode: int = 0o644) -> None:
    path = target / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _items(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return data
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


async def _configmap(api: ApiClient, ns: str, name: str) -> dict[str, bytes]:
    cm = await api.get(f"/api/v1/namespaces/{ns}/configmaps/{name}")
    out = {k: v.encode() for k, v in cm.get("data", {}).items()}
    out.update({k: base64.b64decode(v) for k, v in cm.get("binaryData", {}).items()})
    return out


async def _secret(api: ApiClient, ns: str, name: str) -> dict[str, bytes]:
    secret = await api.get(f"/api/v1/namespaces/{ns}/secrets/{name}")
    return {k: base64.b64decode(v) for k, v in secret.get("data", {}).items()}


async def _token(api: ApiClient, pod: JSON, source: dict[str, Any]) -> bytes:
    meta = pod["metadata"]
    sa = pod["spec"].get("serviceAccountName") or "default"
    req = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": [source["audience"]] if source.get("audience") else None,
            "expirationSeconds": source.get("expirationSeconds", 3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        },
    }
    resp = await api.create(
        f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", req
    )
    return str(resp["status"]["token"]).encode()


def host_path(
    source: JSON, field_path: str, host_paths: Mapping[str, Path], creating: Creating
) -> Path:
    """The host path a hostPath volume mounts (``source`` is its ``hostPath``), created or
    checked as its ``type`` says; paths in ``host_paths`` stand for this node's own copy.

    An unset type creates a missing directory too: Kubernetes leaves that case to the runtime,
    and containerd and Docker both create the directory.
    """
    path = source["path"].rstrip("/") or "/"
    if path in host_paths:
        return host_paths[path]
    local = Path(path)
    kind = source.get("type") or ""
    if kind in ("", "DirectoryOrCreate") and not local.exists():
        creating(local, True)
        local.mkdir(mode=0o755, parents=True, exist_ok=True)
    elif kind == "FileOrCreate" and not local.exists():
        creating(local, False)
        local.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        local.touch(mode=0o644)
    elif kind in _HOST_PATH_CHECKS:
        try:
            mode = local.stat().st_mode
        except OSError as err:
            raise HostPathError(f"{field_path}.path: {path}: {err.strerror}") from err
        if not _HOST_PATH_CHECKS[kind](mode):
            raise HostPathError(f"{field_path}.type: {path} is not a {kind}")
    elif kind not in ("", "DirectoryOrCreate", "FileOrCreate"):
        raise HostPathError(f"{field_path}.type: unknown hostPath type {kind!r}")
    return local


def _no_record(_path: Path, _is_dir: bool) -> None:
    pass


async def materialise(
    api: ApiClient,
    pod: JSON,
    root: Path,
    host_paths: Mapping[str, Path] | None = None,
    creating: Creating = _no_record,
) -> dict[str, Path]:
    """Writes every volume of ``pod`` under ``root``; returns volume name -> host directory."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, Path] = {}
    for index, vol in enumerate(pod["spec"].get("volumes", [])):
        name = vol["name"]
        target = root / name
        if "hostPath" in vol:
            where = f"spec.volumes[{index}].hostPath"
            out[name] = host_path(vol["hostPath"], where, host_paths or {}, creating)
            continue
        target.mkdir(parents=True, exist_ok=True)
        out[name] = target
        if "configMap" in vol:
            src = vol["configMap"]
            data = await _optional(_configmap(api, ns, src["name"]), src.get("optional"))
            for rel, blob in _items(data, src.get("items")).items():
                _write(target, rel, blob)
        elif "secret" in vol:
            src = vol["secret"]
            data = await _optional(_secret(api, ns, src["secretName"]), src.get("optional"))
            for rel, blob in _items(data, src.get("items")).items():
                _write(target, rel, blob, 0o600)
        elif "downwardAPI" in vol:
            for item in vol["downwardAPI"].get("items", []):
                if "fieldRef" in item:
                    _write(
                        target,
                        item["path"],
                        field_value(pod, item["fieldRef"]["fieldPath"]).encode(),
                    )
        elif "projected" in vol:
            for source in vol["projected"].get("sources", []):
                if "serviceAccountToken" in source:
                    tok = source["serviceAccountToken"]
                    _write(target, tok["path"], await _token(api, pod, tok), 0o600)
                elif "configMap" in source:
                    src = source["configMap"]
                    data = await _optional(_configmap(api, ns, src["name"]), src.get("optional"))
                    for rel, blob in _items(data, src.get("items")).items():
                        _write(target, rel, blob)
                elif "secret" in source:
                    src = source["secret"]
                    data = await _optional(_secret(api, ns, src["name"]), src.get("optional"))
                    for rel, blob in _items(data, src.get("items")).items():
                        _write(target, rel, blob, 0o600)
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items", []):
                        if "fieldRef" in item:
                            value = field_value(pod, item["fieldRef"]["fieldPath"])
                            _write(target, item["path"], value.encode())
    return out


async def _optional(coro: Any, optional: bool | None) -> dict[str, bytes]:
    try:
        return dict(await coro)
    except Exception:
        if optional:
            return {}
        raise


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
