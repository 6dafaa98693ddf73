"""Hubble flows (as the Observers serve them) -> the engine's what-if `Flow`s. Pure: no I/O.

Each side of a flow is placed in the engine's picture of the cluster:

- a pod the engine knows, by namespace/name (`ns/pod`);
- a pod the engine no longer knows, by the labels the flow carries (a hypothetical pod of
  that namespace and those labels: the engine re-derives its label set);
- a node's address as that node's host endpoint (`host:NODE`: the engine sees it as `host`
  from its own pods and `remote-node` from the others);
- any other address by itself (a pod IP, a CIDR or the world, as the ipcache would).

A side the engine cannot place (a pod identity whose pod is gone and whose labels the flow
does not carry, an address-less flow, no layer-4 header) is reported with the reason, never
dropped silently. A reply is turned back into the connection it answers: policy decides the
connection, not its replies.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from septum.dataplane.observe.api.flow import flow_pb2
from septum.operator.engine import Engine, Flow
from septum.operator.engine.cluster import IPAddress, PodKey
from septum.operator.engine.explain import HOST_PREFIX
from septum.operator.engine.labels import SERVICE_ACCOUNT_KEY, SOURCE_K8S
from septum.wellknown.reserved import CLUSTER_IDENTITY_MAX, CLUSTER_IDENTITY_MIN

Side = str | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Unplaced:
    """A flow the engine cannot evaluate, and why."""

    reason: str
    text: str  # the flow, briefly: "10.0.0.9:40000 -> 10.0.0.2:80 TCP"


@dataclass(frozen=True, slots=True)
class Missing:
    """Why one side of a flow cannot be placed."""

    reason: str


@dataclass(frozen=True, slots=True)
class HostLocal:
    """Traffic from a node to its own pods: the agents' --allow-localhost=always admits it
    whatever policy says, so no candidate changes its verdict."""

    text: str


class Placer:
    """Places flow endpoints in one engine's cluster (indexes its pods' and nodes' IPs)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pod_by_ip: dict[IPAddress, PodKey] = {}
        for key in engine.pod_identity:
            for ip in engine.pods[key].ips:
                self.pod_by_ip[ip] = key
        self.node_by_ip: dict[IPAddress, str] = {
            ip: node.name for node in engine.nodes.values() for ip in node.ips
        }

    def pod_node(self, side: Side) -> str:
        """The node a placed pod runs on ("" when not a known pod)."""
        if isinstance(side, str) and "/" in side:
            namespace, _, name = side.partition("/")
            pod = self.engine.pods.get(PodKey(namespace, name))
            return pod.node if pod else ""
        return ""

    def place(self, endpoint: flow_pb2.Endpoint, address: str) -> Side | Missing:
        """The engine's name for one side, or why it has none."""
        if endpoint.pod_name:
            key = PodKey(endpoint.namespace or "default", endpoint.pod_name)
            if key in self.engine.pod_identity:
                return str(key)
            return self._by_labels(endpoint, f"pod {key} is gone")
        ip = _address(address)
        if ip is None:
            return Missing("no IP address")
        if ip in self.pod_by_ip:
            return str(self.pod_by_ip[ip])
        if ip in self.node_by_ip:
            return f"{HOST_PREFIX}{self.node_by_ip[ip]}"
        if CLUSTER_IDENTITY_MIN <= endpoint.identity <= CLUSTER_IDENTITY_MAX:
            return self._by_labels(endpoint, f"{ip} (pod identity {endpoint.identity}) has no pod")
        return str(ip)

    def _by_labels(self, endpoint: flow_pb2.Endpoint, missing: str) -> Side | Missing:
        labels: dict[str, str] = {}
        for text in endpoint.labels:
            source, _, pair = text.partition(":")
            if source != SOURCE_K8S:
                continue
            key, _, value = pair.partition("=")
            labels[key] = value
        if not endpoint.namespace or not labels:
            return Missing(f"{missing} and the flow carries no labels")
        return {
            "namespace": endpoint.namespace,
            "labels": labels,  # the engine drops the keys it derives (namespace, cluster, ...)
            "serviceAccount": labels.get(SERVICE_ACCOUNT_KEY, "default"),
        }


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _layer4(flow: flow_pb2.Flow) -> tuple[str, int, int] | None:
    """(protocol, source port, destination port); ICMP's type stands in as the port."""
    which = flow.l4.WhichOneof("protocol")
    if which in ("TCP", "UDP", "SCTP"):
        l4 = getattr(flow.l4, which)
        return which, l4.source_port, l4.destination_port
    if which == "ICMPv4":
        return "ICMP", 0, flow.l4.ICMPv4.type
    if which == "ICMPv6":
        return "ICMPv6", 0, flow.l4.ICMPv6.type
    return None


def is_reply(flow: flow_pb2.Flow) -> bool:
    return flow.is_reply.value if flow.HasField("is_reply") else flow.reply


def brief(flow: flow_pb2.Flow) -> str:
    l4 = _layer4(flow)
    ports = (f":{l4[1]}", f":{l4[2]}", f" {l4[0]}") if l4 else ("", "", "")
    return f"{flow.IP.source or '?'}{ports[0]} -> {flow.IP.destination or '?'}{ports[1]}{ports[2]}"


def convert(
    flow: flow_pb2.Flow, placer: Placer, allow_localhost: bool = True
) -> Flow | Unplaced | HostLocal:
    """One Hubble flow as the connection the engine evaluates."""
    l4 = _layer4(flow)
    if l4 is None:
        return Unplaced("no layer-4 header", brief(flow))
    protocol, source_port, destination_port = l4
    source, destination = (flow.source, flow.IP.source), (flow.destination, flow.IP.destination)
    port = destination_port
    if is_reply(flow):
        source, destination, port = destination, source, source_port
    placed_source = placer.place(*source)
    placed_destination = placer.place(*destination)
    if isinstance(placed_source, Missing):
        return Unplaced(placed_source.reason, brief(flow))
    if isinstance(placed_destination, Missing):
        return Unplaced(placed_destination.reason, brief(flow))
    if (
        allow_localhost
        and isinstance(placed_source, str)
        and placed_source.startswith(HOST_PREFIX)
        and placed_source[len(HOST_PREFIX) :] == placer.pod_node(placed_destination)
    ):
        return HostLocal(brief(flow))
    return Flow(placed_source, placed_destination, port, protocol)


def flow_key(flow: Flow) -> tuple[str, str, int, str]:
    """A hashable key of a Flow (a hypothetical side is a dict)."""

    def side(value: Side) -> str:
        if isinstance(value, str):
            return value
        labels = ",".join(f"{k}={v}" for k, v in sorted(value["labels"].items()))
        return f"{value['namespace']}:{labels}"

    return side(flow.source), side(flow.destination), flow.port, flow.protocol.upper()


@dataclass(slots=True)
class Seen:
    """Distinct connections among the flows, with how often and how each was observed."""

    flows: dict[tuple[str, str, int, str], Flow] = field(default_factory=dict)
    counts: Counter[tuple[str, str, int, str]] = field(default_factory=Counter)
    observed: dict[tuple[str, str, int, str], Counter[str]] = field(default_factory=dict)
    unplaced: Counter[str] = field(default_factory=Counter)  # reason -> flows
    unplaced_examples: dict[str, str] = field(default_factory=dict)  # reason -> one flow
    host_local: int = 0
    total: int = 0

    def add(self, flow: flow_pb2.Flow, placer: Placer, allow_localhost: bool = True) -> None:
        self.total += 1
        result = convert(flow, placer, allow_localhost)
        if isinstance(result, HostLocal):
            self.host_local += 1
            return
        if isinstance(result, Unplaced):
            self.unplaced[result.reason] += 1
            self.unplaced_examples.setdefault(result.reason, result.text)
            return
        key = flow_key(result)
        self.flows.setdefault(key, result)
        self.counts[key] += 1
        verdict = flow_pb2.Verdict.Name(flow.verdict)
        self.observed.setdefault(key, Counter())[verdict] += 1


def distinct(flows: Iterable[flow_pb2.Flow], engine: Engine, allow_localhost: bool = True) -> Seen:
    placer = Placer(engine)
    seen = Seen()
    for flow in flows:
        seen.add(flow, placer, allow_localhost)
    return seen
