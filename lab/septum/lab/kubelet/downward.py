"""The downward API: a pod's own fields, named by ``fieldRef.fieldPath``, as strings.

Both consumers resolve the same paths the same way: env variables (``valueFrom.fieldRef``) and
downwardAPI volume files. A path the lab does not know resolves to "" rather than failing the
pod, since the API server has already validated it.
"""

from __future__ import annotations

from septum.lab.kubelet.objects import JSON


def field_value(pod: JSON, field_path: str) -> str:
    """``field_path`` of ``pod``; status fields come from the pod's ``status`` as given."""
    meta = pod["metadata"]
    if field_path == "metadata.name":
        return str(meta["name"])
    if field_path == "metadata.namespace":
        return str(meta["namespace"])
    if field_path == "metadata.uid":
        return str(meta["uid"])
    if field_path.startswith("metadata.labels['") or field_path.startswith(
        "metadata.annotations['"
    ):
        which = "labels" if "labels" in field_path else "annotations"
        key = field_path.split("['", 1)[1].rstrip("']")
        return str(meta.get(which, {}).get(key, ""))
    if field_path == "metadata.labels":
        return "\n".join(f'{k}="{v}"' for k, v in sorted(meta.get("labels", {}).items()))
    if field_path == "spec.nodeName":
        return str(pod["spec"].get("nodeName", ""))
    if field_path == "spec.serviceAccountName":
        return str(pod["spec"].get("serviceAccountName", "default"))
    if field_path == "status.podIP":
        return str(pod.get("status", {}).get("podIP", ""))
    if field_path == "status.hostIP":
        return str(pod.get("status", {}).get("hostIP", ""))
    return ""
