"""Pod volumes materialised as directories, later bind-mounted at each container's mountPath.

ConfigMaps, Secrets, projected service-account tokens and the downward API are written from the
API (the Node authorizer lets a node read exactly what its pods reference); emptyDir is a fresh
directory and hostPath the host's own path.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

from septum.lab.kubelet.api import ApiClient
from septum.lab.kubelet.downward import field_value
from septum.lab.kubelet.objects import JSON


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


async def materialise(
    api: ApiClient, pod: JSON, root: Path, host_paths: dict[str, Path] | None = None
) -> dict[str, Path]:
    """Writes every volume of ``pod`` under ``root``; returns volume name -> host directory."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, Path] = {}
    for vol in pod["spec"].get("volumes", []):
        name = vol["name"]
        target = root / name
        if "hostPath" in vol:
            path = vol["hostPath"]["path"].rstrip("/") or "/"
            out[name] = (host_paths or {}).get(path, Path(path))
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
