"""Cluster objects (pods, namespaces, nodes) parsed from raw API dicts into frozen values."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from septum.operator.engine.errors import InvalidObject
from septum.operator.engine.ports import PROTOCOL_NUMBERS
from septum.operator.engine.rules import IPNetwork

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Audit mode: this key as a namespace label or annotation, a pod annotation, or a policy
# annotation; "enabled" (the documented value) or "true" turns it on.
AUDIT_ANNOTATION = "policy.septum.io/audit-mode"
AUDIT_ON_VALUES = frozenset({"enabled", "true"})


def audit_mode_on(values: Mapping[str, Any] | None) -> bool:
    """Whether these labels or annotations turn audit mode on."""
    if not isinstance(values, Mapping):
        return False
    return str(values.get(AUDIT_ANNOTATION, "")).strip().lower() in AUDIT_ON_VALUES


def _shape_checked(parse: Callable[[Mapping[str, Any]], T], obj: Any, what: str) -> T:
    """`parse(obj)`, with a wrongly shaped object reported as InvalidObject.

    The parsers name the fields the engine relies on; a field of another type deep
    inside (a container that is a string, say) surfaces as a TypeError or
    AttributeError, which is the object's fault, not the engine's.
    """
    if not isinstance(obj, Mapping):
        raise InvalidObject(f"{what}: expected an object, got {type(obj).__name__}")
    try:
        return parse(obj)
    except (AttributeError, TypeError, KeyError, ValueError) as err:
        raise InvalidObject(f"{what}: malformed object: {err!r}") from err


def _meta(obj: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise InvalidObject(f"{what}: metadata.name is required")
    return meta


def _str_map(value: Any, path: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidObject(f"{path}: expected an object")
    return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True, slots=True, order=True)
class PodKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, order=True)
class HostKey:
    """A node's host endpoint (the host firewall); written `host:NAME` in explain and the CLI."""

    node: str

    def __str__(self) -> str:
        return f"host:{self.node}"


EndpointKey = PodKey | HostKey


@dataclass(frozen=True, slots=True)
class Pod:
    key: PodKey
    labels: tuple[tuple[str, str], ...]
    ips: tuple[IPAddress, ...]
    # (name, protocol number, port) of every named container port.
    named_ports: tuple[tuple[str, int, int], ...]
    host_network: bool
    node: str
    service_account: str
    audit: bool

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: tuple[tuple[str, str], ...]
    audit: bool


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    labels: tuple[tuple[str, str], ...]
    ips: tuple[IPAddress, ...]


def parse_pod(obj: Mapping[str, Any]) -> Pod:
    return _shape_checked(_parse_pod, obj, "pod")


def _parse_pod(obj: Mapping[str, Any]) -> Pod:
    meta = _meta(obj, "pod")
    namespace = str(meta.get("namespace") or "default")
    name = str(meta["name"])
    where = f"pod {namespace}/{name}"
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ips: list[IPAddress] = []
    raw_ips = [item.get("ip") for item in status.get("podIPs") or [] if isinstance(item, Mapping)]
    if not raw_ips and status.get("podIP"):
        raw_ips = [status["podIP"]]
    for i, text in enumerate(raw_ips):
        try:
            address = ipaddress.ip_address(str(text))
        except ValueError as err:
            raise InvalidObject(f"{where}: status.podIPs[{i}].ip: {err}") from err
        if address not in ips:
            ips.append(address)
    named: list[tuple[str, int, int]] = []
    for section in ("containers", "initContainers"):
        for c_index, container in enumerate(spec.get(section) or []):
            for p_index, port in enumerate(container.get("ports") or []):
                if not port.get("name"):
                    continue
                proto_name = str(port.get("protocol") or "TCP")
                if proto_name not in PROTOCOL_NUMBERS:
                    at = f"spec.{section}[{c_index}].ports[{p_index}].protocol"
                    raise InvalidObject(f"{where}: {at}: unknown protocol {proto_name!r}")
                number = port.get("containerPort")
                if not isinstance(number, int) or not 1 <= number <= 65535:
                    at = f"spec.{section}[{c_index}].ports[{p_index}].containerPort"
                    raise InvalidObject(f"{where}: {at}: {number!r} is out of range")
                named.append((str(port["name"]), PROTOCOL_NUMBERS[proto_name], number))
    annotations = _str_map(meta.get("annotations"), f"{where}: metadata.annotations")
    return Pod(
        key=PodKey(namespace, name),
        labels=tuple(sorted(_str_map(meta.get("labels"), f"{where}: metadata.labels").items())),
        ips=tuple(ips),
        named_ports=tuple(sorted(set(named))),
        host_network=bool(spec.get("hostNetwork", False)),
        node=str(spec.get("nodeName") or ""),
        service_account=str(spec.get("serviceAccountName") or "default"),
        audit=audit_mode_on(annotations),
    )


def parse_namespace(obj: Mapping[str, Any]) -> Namespace:
    return _shape_checked(_parse_namespace, obj, "namespace")


def _parse_namespace(obj: Mapping[str, Any]) -> Namespace:
    meta = _meta(obj, "namespace")
    name = str(meta["name"])
    labels = _str_map(meta.get("labels"), f"namespace {name}: metadata.labels")
    # The API server sets this label on every namespace; manifests may omit it.
    labels.setdefault(NAMESPACE_NAME_LABEL, name)
    annotations = _str_map(meta.get("annotations"), f"namespace {name}: metadata.annotations")
    audit = audit_mode_on(labels) or audit_mode_on(annotations)
    return Namespace(name, tuple(sorted(labels.items())), audit)


def parse_node(obj: Mapping[str, Any]) -> Node:
    return _shape_checked(_parse_node, obj, "node")


def _parse_node(obj: Mapping[str, Any]) -> Node:
    meta = _meta(obj, "node")
    name = str(meta["name"])
    ips: list[IPAddress] = []
    for i, item in enumerate((obj.get("status") or {}).get("addresses") or []):
        if item.get("type") not in ("InternalIP", "ExternalIP"):
            continue
        try:
            ips.append(ipaddress.ip_address(str(item.get("address"))))
        except ValueError as err:
            raise InvalidObject(f"node {name}: status.addresses[{i}].address: {err}") from err
    labels = _str_map(meta.get("labels"), f"node {name}: metadata.labels")
    return Node(name, tuple(sorted(labels.items())), tuple(ips))


def host_network(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IPNetwork:
    """The /32 or /128 of an address (the tuple constructor skips re-parsing: 3x faster)."""
    if ip.version == 4:
        return ipaddress.IPv4Network((int(ip), 32))
    return ipaddress.IPv6Network((int(ip), 128))
