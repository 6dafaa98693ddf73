"""Plain facts the engine side hands the datapath side (metadata, status), as values.

Neither side's types cross here: the compiler (engine side) fills these, the Observer's
metadata and the status writer (datapath side and API) read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PodFacts:
    namespace: str
    name: str
    node: str
    identity: int
    ips: tuple[str, ...]
    labels: tuple[str, ...]  # Hubble form: "k8s:app=web"
    workloads: tuple[tuple[str, str], ...]  # (name, kind), e.g. ("web", "Deployment")


@dataclass(frozen=True)
class RuleFacts:
    """The policy a datapath rule id stands for (for a default deny: the policy that
    isolated the endpoint)."""

    rule_id: int
    kind: str
    namespace: str
    name: str
    default_deny: bool = False
    revision: int = 0


@dataclass(frozen=True)
class EndpointFacts:
    """One local endpoint's realized state, for its SeptumEndpoint status."""

    namespace: str
    name: str
    endpoint_id: int
    identity: int
    identity_labels: tuple[str, ...]
    node: str
    ips: tuple[str, ...]
    ingress_enforced: bool
    egress_enforced: bool
    audit: bool
    revision: int
    state: str  # "ready", "waiting-for-identity", ...
    pod_uid: str = ""  # the owner of the SeptumEndpoint (garbage-collected with the pod)
