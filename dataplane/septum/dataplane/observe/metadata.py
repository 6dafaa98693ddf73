"""What the agent knows about the cluster, as the flow decoder asks for it.

The datapath reports numbers (endpoint id, security identity, policy rule id);
users want pods, labels and policy names. The agent fills an implementation of
`Metadata` from Kubernetes; tests fill `StaticMetadata` with their own pods.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol

from septum.wellknown.reserved import RESERVED


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str


@dataclass(frozen=True)
class EndpointInfo:
    """A pod on this node (or a known peer), as Hubble shows an endpoint."""

    endpoint_id: int
    identity: int
    namespace: str
    pod_name: str
    labels: tuple[str, ...] = ()  # Hubble form: "k8s:app=web"
    workloads: tuple[Workload, ...] = ()
    ips: tuple[str, ...] = ()
    cluster_name: str = ""


@dataclass(frozen=True)
class PolicyInfo:
    """The policy a datapath rule id was compiled from."""

    name: str
    namespace: str
    kind: str  # e.g. "NetworkPolicy", "CiliumNetworkPolicy"
    labels: tuple[str, ...] = ()
    revision: int = 0
    # The rule is the policy's default deny (it isolated the endpoint; no rule allowed): the
    # datapath drops on a deny entry, and Hubble calls that POLICY_DENIED, not POLICY_DENY.
    default_deny: bool = False


class Metadata(Protocol):
    """Read-only lookups the decoder performs for every flow it builds."""

    def endpoint(self, endpoint_id: int) -> EndpointInfo | None: ...

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None: ...

    def identity_labels(self, identity: int) -> tuple[str, ...]: ...

    def policy(self, rule_id: int) -> PolicyInfo | None: ...


# Labels of Cilium's reserved identities, so flows from unknown peers read as
# Hubble shows them even before the agent has taught us anything.
RESERVED_IDENTITY_LABELS: dict[int, tuple[str, ...]] = {
    int(identity): (f"reserved:{label}",) for label, identity in RESERVED.items()
}


@dataclass
class StaticMetadata:
    """Dictionary-backed `Metadata`; thread-safe for one writer, many readers."""

    endpoints: dict[int, EndpointInfo] = field(default_factory=dict)
    identities: dict[int, tuple[str, ...]] = field(default_factory=dict)
    policies: dict[int, PolicyInfo] = field(default_factory=dict)
    _by_ip: dict[str, EndpointInfo] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Bumped on every change so decoders drop what they cached from older answers.
    generation: int = 0

    def __post_init__(self) -> None:
        for info in list(self.endpoints.values()):
            self.add_endpoint(info)

    def add_endpoint(self, info: EndpointInfo) -> None:
        with self._lock:
            self.generation += 1
            self.endpoints[info.endpoint_id] = info
            for ip in info.ips:
                self._by_ip[ip] = info
            if info.identity and info.labels:
                self.identities.setdefault(info.identity, info.labels)

    def remove_endpoint(self, endpoint_id: int) -> None:
        with self._lock:
            self.generation += 1
            info = self.endpoints.pop(endpoint_id, None)
            if info is not None:
                for ip in info.ips:
                    self._by_ip.pop(ip, None)

    def add_identity(self, identity: int, labels: tuple[str, ...]) -> None:
        self.identities[identity] = labels
        self.generation += 1

    def add_policy(self, rule_id: int, policy: PolicyInfo) -> None:
        self.policies[rule_id] = policy
        self.generation += 1

    def endpoint(self, endpoint_id: int) -> EndpointInfo | None:
        return self.endpoints.get(endpoint_id)

    def endpoint_by_ip(self, ip: str) -> EndpointInfo | None:
        return self._by_ip.get(ip)

    def identity_labels(self, identity: int) -> tuple[str, ...]:
        labels = self.identities.get(identity)
        if labels is not None:
            return labels
        return RESERVED_IDENTITY_LABELS.get(identity, ())

    def policy(self, rule_id: int) -> PolicyInfo | None:
        return self.policies.get(rule_id)

    def namespaces(self) -> list[str]:
        return sorted({info.namespace for info in self.endpoints.values() if info.namespace})
