"""Services as kube-proxy translates them: frontends (IP, protocol, port) → backends.

Egress policy is decided on the pod's host veth, before kube-proxy's DNAT in the node's
network namespace, so a packet to a ClusterIP still carries the ClusterIP.  Kubernetes
decides NetworkPolicy after translation (on the backend pod and its target port); the agent
gets there by giving every frontend IP a service identity (`FrontendIdentities`) and deriving
that identity's egress entries from the backends' verdicts (`septum.agent.serviceegress`).

This module is the table those two read, kept from watched `Service` (v1) and `EndpointSlice`
(discovery.k8s.io/v1) objects, the way kube-proxy reads them:
- frontends: every ClusterIP (`spec.clusterIPs`, dual-stack, else `spec.clusterIP`) and every
  `spec.externalIPs` address × each `spec.ports` entry; a headless Service (`None`) has none.
  NodePorts and LoadBalancer addresses are not frontends here (out of scope, see
  docs/policy-semantics.md);
- backends: the endpoints of the slices labelled `kubernetes.io/service-name=<service>` in the
  Service's namespace, of the frontend's address family, on the slice port of the same *name*
  (its number is the target port resolved for those endpoints: a named targetPort may differ
  per backend);
- readiness (kube-proxy's rule): endpoints whose `conditions.ready` is not false; when none is,
  those both `serving` and `terminating`.

Pure: objects in, values out.  Errors name the object and the field.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from septum.operator.engine.ports import PROTOCOL_NUMBERS
from septum.wellknown.reserved import SERVICE_IDENTITY_MAX, SERVICE_IDENTITY_MIN
from septum.wellknown.services import (
    SERVICE_IDENTITY_NAME_LABEL,
    SERVICE_IDENTITY_NAMESPACE_LABEL,
)

SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
HEADLESS: Final = "None"
Obj = Mapping[str, Any]
Key = tuple[str, str]  # (namespace, name)


class ServiceObjectError(ValueError):
    """A Service or EndpointSlice that cannot be read; the message names the object and field."""


class ServiceIdentitiesExhausted(RuntimeError):
    """Every number of the service identity range is in use on this node."""


@dataclass(frozen=True, order=True)
class Frontend:
    """What a pod connects to: a service address, protocol number and port."""

    ip: str
    protocol: int
    port: int


@dataclass(frozen=True, order=True)
class Backend:
    """Where kube-proxy sends it: the endpoint's address and its target port number."""

    ip: str
    port: int


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: int
    port: int


@dataclass(frozen=True)
class Service:
    key: Key
    ips: tuple[str, ...]  # frontend addresses, normalised; empty for a headless Service
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True)
class SliceEndpoint:
    addresses: tuple[str, ...]
    ready: bool
    serving: bool
    terminating: bool


@dataclass(frozen=True)
class EndpointSlice:
    key: Key
    service: str  # the Service's name (its label), "" when the slice belongs to none
    ports: tuple[ServicePort, ...]  # name, protocol, the port number on the endpoints
    endpoints: tuple[SliceEndpoint, ...]


def _where(obj: Obj, kind: str) -> str:
    meta = obj.get("metadata") or {}
    return f"{kind} {meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _key(obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def _address(value: Any, where: str, path: str) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError as err:
        raise ServiceObjectError(f"{where}: {path}: {value!r} is not an IP address") from err


def _protocol(value: Any, where: str, path: str) -> int:
    name = str(value or "TCP")
    number = PROTOCOL_NUMBERS.get(name)
    if number is None:
        raise ServiceObjectError(f"{where}: {path}: unknown protocol {name!r}")
    return number


def _port(value: Any, where: str, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ServiceObjectError(f"{where}: {path}: {value!r} is not a port number (1-65535)")
    return value


def parse_service(obj: Obj) -> Service:
    """A Service's frontend addresses and ports."""
    where = _where(obj, "Service")
    spec = obj.get("spec") or {}
    cluster_ips = list(spec.get("clusterIPs") or [])
    if not cluster_ips and spec.get("clusterIP"):
        cluster_ips = [spec["clusterIP"]]
    ips: list[str] = []
    if HEADLESS not in cluster_ips:
        field_name = "clusterIPs" if spec.get("clusterIPs") else "clusterIP"
        for index, ip in enumerate(cluster_ips):
            path = f"spec.{field_name}[{index}]" if field_name == "clusterIPs" else "spec.clusterIP"
            if ip:
                ips.append(_address(ip, where, path))
        for index, ip in enumerate(spec.get("externalIPs") or []):
            ips.append(_address(ip, where, f"spec.externalIPs[{index}]"))
    ports = tuple(
        ServicePort(
            str(port.get("name") or ""),
            _protocol(port.get("protocol"), where, f"spec.ports[{index}].protocol"),
            _port(port.get("port"), where, f"spec.ports[{index}].port"),
        )
        for index, port in enumerate(spec.get("ports") or [])
    )
    return Service(_key(obj), tuple(dict.fromkeys(ips)), ports)


def parse_endpoint_slice(obj: Obj) -> EndpointSlice:
    """An EndpointSlice's service, ports and endpoints (FQDN slices have no addresses to use)."""
    where = _where(obj, "EndpointSlice")
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service = str(labels.get(SERVICE_NAME_LABEL) or "")
    ports: list[ServicePort] = []
    for index, port in enumerate(obj.get("ports") or []):
        number = port.get("port")
        if number is None:
            continue  # "all ports": kube-proxy has no target port to send to either
        ports.append(
            ServicePort(
                str(port.get("name") or ""),
                _protocol(port.get("protocol"), where, f"ports[{index}].protocol"),
                _port(number, where, f"ports[{index}].port"),
            )
        )
    endpoints: list[SliceEndpoint] = []
    if str(obj.get("addressType") or "IPv4") in ("IPv4", "IPv6"):
        for index, endpoint in enumerate(obj.get("endpoints") or []):
            conditions = endpoint.get("conditions") or {}
            ready = conditions.get("ready") is not False
            addresses = tuple(
                _address(a, where, f"endpoints[{index}].addresses[{n}]")
                for n, a in enumerate(endpoint.get("addresses") or [])
            )
            endpoints.append(
                SliceEndpoint(
                    addresses,
                    ready,
                    # unset serving means ready (the API's documented default)
                    conditions.get("serving", ready) is not False,
                    conditions.get("terminating") is True,
                )
            )
    return EndpointSlice(_key(obj), service, tuple(ports), tuple(endpoints))


def usable_endpoints(endpoints: Iterable[SliceEndpoint]) -> list[SliceEndpoint]:
    """The endpoints kube-proxy sends to: the ready ones, else those serving and terminating."""
    listed = list(endpoints)
    ready = [e for e in listed if e.ready]
    if ready:
        return ready
    return [e for e in listed if e.serving and e.terminating]


def service_backends(
    service: Service, slices: Iterable[EndpointSlice]
) -> dict[Frontend, tuple[Backend, ...]]:
    """Each frontend of `service` with its backends (sorted, distinct); a frontend with no
    usable backend maps to ().  The readiness fallback is decided per frontend over every
    slice, as kube-proxy decides it per service port and address family."""
    slices = list(slices)
    table: dict[Frontend, tuple[Backend, ...]] = {}
    for ip in service.ips:
        version = ipaddress.ip_address(ip).version
        for port in service.ports:
            candidates: list[tuple[SliceEndpoint, Backend]] = []
            for endpoint_slice in slices:
                target = next(
                    (p for p in endpoint_slice.ports
                     if p.name == port.name and p.protocol == port.protocol),
                    None,
                )  # fmt: skip
                if target is None:
                    continue
                for endpoint in endpoint_slice.endpoints:
                    for address in endpoint.addresses:
                        if ipaddress.ip_address(address).version == version:
                            candidates.append((endpoint, Backend(address, target.port)))
            usable = {id(e) for e in usable_endpoints(e for e, _ in candidates)}
            found = {backend for endpoint, backend in candidates if id(endpoint) in usable}
            table[Frontend(ip, port.protocol, port.port)] = tuple(sorted(found))
    return table


@dataclass
class ServiceTable:
    """The watched Services and EndpointSlices, and the frontends they make."""

    services: dict[Key, Service] = field(default_factory=dict)
    slices: dict[Key, EndpointSlice] = field(default_factory=dict)

    def upsert_service(self, obj: Obj) -> None:
        self.services[_key(obj)] = parse_service(obj)

    def delete_service(self, obj: Obj) -> None:
        self.services.pop(_key(obj), None)

    def upsert_slice(self, obj: Obj) -> None:
        self.slices[_key(obj)] = parse_endpoint_slice(obj)

    def delete_slice(self, obj: Obj) -> None:
        self.slices.pop(_key(obj), None)

    def frontends(self) -> dict[Frontend, tuple[Backend, ...]]:
        """Every frontend with its backends.  Two Services sharing an external IP and port
        (kube-proxy picks one) have their backends joined: a verdict over both is safe."""
        by_service: dict[Key, list[EndpointSlice]] = {}
        for (namespace, _), endpoint_slice in self.slices.items():
            if endpoint_slice.service:
                by_service.setdefault((namespace, endpoint_slice.service), []).append(
                    endpoint_slice
                )
        table: dict[Frontend, tuple[Backend, ...]] = {}
        for key in sorted(self.services):
            found = service_backends(self.services[key], by_service.get(key, ()))
            for frontend, backends in found.items():
                joined = set(table.get(frontend, ())) | set(backends)
                table[frontend] = tuple(sorted(joined))
        return table

    def services_by_ip(self) -> dict[str, tuple[Key, ...]]:
        """Each frontend address with the Services that hold it."""
        found: dict[str, list[Key]] = {}
        for key in sorted(self.services):
            for ip in self.services[key].ips:
                found.setdefault(ip, []).append(key)
        return {ip: tuple(keys) for ip, keys in found.items()}


class FrontendIdentities:
    """A node-local identity per frontend address, stable while the address is a frontend.

    Numbers come from `SERVICE_IDENTITY_MIN..MAX` in turn, wrapping around, so a number freed
    by an address that stopped being a frontend is not given to another one until the range
    has gone round (a datapath entry or a flow of the old meaning never meets the new one).
    """

    def __init__(self, first: int = SERVICE_IDENTITY_MIN, last: int = SERVICE_IDENTITY_MAX) -> None:
        self.first, self.last = first, last
        self.by_ip: dict[str, int] = {}
        self._used: set[int] = set()
        self._next = first

    def update(self, ips: Iterable[str]) -> tuple[dict[str, int], set[str]]:
        """Make `ips` the frontend addresses: (addresses given a number, addresses released)."""
        wanted = set(ips)
        released = set(self.by_ip) - wanted
        for ip in sorted(released):
            self._used.discard(self.by_ip.pop(ip))
        given: dict[str, int] = {}
        for ip in sorted(wanted - set(self.by_ip)):
            given[ip] = self.by_ip[ip] = self._allocate()
        return given, released

    def _allocate(self) -> int:
        size = self.last - self.first + 1
        if len(self._used) >= size:
            raise ServiceIdentitiesExhausted(f"all {size} service identities are in use")
        number = self._next
        while number in self._used:
            number = number + 1 if number < self.last else self.first
        self._next = number + 1 if number < self.last else self.first
        self._used.add(number)
        return number


def service_labels(services: Iterable[Key]) -> tuple[str, ...]:
    """A service identity's labels as flows show them (one pair per Service on the address)."""
    labels: list[str] = []
    for namespace, name in services:
        labels.append(f"{SERVICE_IDENTITY_NAMESPACE_LABEL}={namespace}")
        labels.append(f"{SERVICE_IDENTITY_NAME_LABEL}={name}")
    return tuple(dict.fromkeys(labels))
