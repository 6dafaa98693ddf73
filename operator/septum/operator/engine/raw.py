"""TypedDicts describing the raw API objects the engine reads (as the API server returns them).

Only the fields the engine uses are listed; everything else is ignored.
"""

from __future__ import annotations

from typing import Any, TypedDict


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    labels: dict[str, str]
    annotations: dict[str, str]


class ContainerPort(TypedDict, total=False):
    name: str
    containerPort: int
    protocol: str


class Container(TypedDict, total=False):
    name: str
    ports: list[ContainerPort]


class PodSpec(TypedDict, total=False):
    containers: list[Container]
    initContainers: list[Container]
    hostNetwork: bool
    nodeName: str
    serviceAccountName: str


class PodIP(TypedDict):
    ip: str


class PodStatus(TypedDict, total=False):
    podIP: str
    podIPs: list[PodIP]


class RawPod(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus


class RawNamespace(TypedDict, total=False):
    metadata: ObjectMeta


class NodeAddress(TypedDict):
    type: str
    address: str


class NodeStatus(TypedDict, total=False):
    addresses: list[NodeAddress]


class RawNode(TypedDict, total=False):
    metadata: ObjectMeta
    status: NodeStatus


class RawPolicy(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: ObjectMeta
    spec: dict[str, Any]
    specs: list[dict[str, Any]]
