"""explain(source, destination, port, protocol): allowed or denied, where, and why.

Evaluates the policies directly on the endpoints' labels (no compiled state),
with the same tier semantics as the compiler; a property test checks that both
always agree. Endpoints are pods ("ns/name"), host endpoints ("host:NODE"),
IP addresses, or hypothetical endpoints given by namespace and labels.

A host endpoint is subject only to clusterwide policies with a nodeSelector.
As a peer it is the reserved `host` identity for endpoints on its own node and
`remote-node` for everything else (a node's address given as an IP keeps
resolving to host/remote-node from the engine's `local_node`, unmanaged).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from septum.operator.engine.cluster import NAMESPACE_NAME_LABEL, IPAddress, PodKey
from septum.operator.engine.errors import UnknownEndpoint
from septum.operator.engine.identities import reserved_labels
from septum.operator.engine.labels import LabelSet, pod_label_set
from septum.operator.engine.matching import peers_match
from septum.operator.engine.ports import NamedPort, PortRange, parse_protocol_name, protocol_name
from septum.operator.engine.registry import RuleInfo
from septum.operator.engine.resolution import NamedPortMap
from septum.operator.engine.rules import (
    Action,
    Direction,
    DnsRule,
    HttpRule,
    L7Rules,
    PolicyKey,
    Rule,
    RuleRef,
    Tier,
)
from septum.operator.engine.state import Engine
from septum.wellknown.reserved import ReservedIdentity


@dataclass(frozen=True, slots=True)
class EndpointRef:
    """One side of a connection, resolved."""

    description: str
    labels: LabelSet
    managed: bool  # policies can select it (a pod or a hypothetical pod)
    identity: int | None = None
    ip: IPAddress | None = None
    named_ports: NamedPortMap = field(default_factory=dict)
    node: str = ""  # the node it runs on ("" if unknown)
    host: str | None = None  # the node name, if this is a host endpoint
    audit: bool = False  # in audit mode (its pod or namespace): its denies only report


HOST_PREFIX = "host:"


def seen_by(peer: EndpointRef, viewer: EndpointRef) -> EndpointRef:
    """A host endpoint as `viewer` sees it: `host` on the same node, else `remote-node`."""
    if peer.host is None:
        return peer
    same = bool(viewer.node) and viewer.node == peer.host
    number = ReservedIdentity.HOST if same else ReservedIdentity.REMOTE_NODE
    return dataclasses.replace(peer, labels=reserved_labels(number.label), identity=int(number))


def _resolve_host(engine: Engine, name: str) -> EndpointRef:
    node = engine.nodes.get(name)
    if node is None:
        raise UnknownEndpoint(f"{HOST_PREFIX}{name}: no such node")
    return EndpointRef(
        f"{HOST_PREFIX}{name}",
        engine.node_labels(name),
        True,
        int(ReservedIdentity.HOST),
        node.ips[0] if node.ips else None,
        {},
        name,
        name,
    )


@dataclass(frozen=True, slots=True)
class DirectionVerdict:
    direction: Direction
    allowed: bool
    rule_id: int
    info: RuleInfo
    reason: str
    l7: bool = False
    passed_by: tuple[RuleRef, ...] = ()
    endpoint_audit: bool = False  # the endpoint deciding is in audit mode
    # What the L7 proxy enforces on a redirected connection (empty unless `l7`): the L7 rules
    # of every rule that allowed it, as Cilium merges them on one port and peer.
    l7_rules: L7Rules = L7Rules()

    @property
    def tier(self) -> Tier | None:
        return self.info.tier

    @property
    def audit(self) -> bool:
        """Denied, but by a policy in audit mode or at an endpoint in audit mode: the
        datapath reports it (AUDIT) and forwards."""
        return not self.allowed and (self.info.audit or self.endpoint_audit)

    @property
    def policy(self) -> PolicyKey | None:
        return self.info.ref.policy if self.info.ref else None


@dataclass(frozen=True, slots=True)
class Explanation:
    source: EndpointRef
    destination: EndpointRef
    protocol: int
    port: int
    egress: DirectionVerdict | None  # None: the source is outside the cluster
    ingress: DirectionVerdict | None  # None: the destination is outside the cluster

    @property
    def allowed(self) -> bool:
        return all(v is None or v.allowed for v in (self.egress, self.ingress))

    @property
    def audited(self) -> bool:
        """Denied only by policies in audit mode: the datapath reports it and forwards."""
        verdicts = [v for v in (self.egress, self.ingress) if v is not None and not v.allowed]
        return bool(verdicts) and all(v.audit for v in verdicts)

    def summary(self) -> str:
        verdict = "ALLOWED" if self.allowed else "DENIED"
        verdict += " (audit mode: forwarded)" if self.audited else ""
        lines = [
            f"{verdict}: {self.source.description} -> {self.destination.description} "
            f"{protocol_name(self.protocol)}/{self.port}"
        ]
        for name, item in (("egress", self.egress), ("ingress", self.ingress)):
            if item is None:
                lines.append(f"  {name}: not enforced (endpoint outside the cluster)")
                continue
            state = "allowed" if item.allowed else "denied"
            state = "audited (denied, but reported and forwarded)" if item.audit else state
            extra = " (redirected to the L7 proxy)" if item.l7 and item.allowed else ""
            lines.append(f"  {name}: {state}{extra}: {item.reason}")
            for ref in item.passed_by:
                lines.append(f"    passed on by {ref}")
        return "\n".join(lines)


def resolve_endpoint(engine: Engine, spec: str | Mapping[str, Any]) -> EndpointRef:
    """'ns/name' (a pod), 'host:NODE' (a host endpoint), an IP address, or
    {'namespace':…, 'labels':{…}, 'serviceAccount':…} (a hypothetical pod)."""
    if isinstance(spec, Mapping):
        namespace = str(spec.get("namespace", "default"))
        labels = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
        ns = engine.namespaces.get(namespace)
        ns_labels = dict(ns.labels) if ns else {NAMESPACE_NAME_LABEL: namespace}
        label_set = pod_label_set(
            namespace,
            labels,
            ns_labels,
            str(spec.get("serviceAccount", "default")),
            engine.cluster_name,
            engine.label_filter,
        )
        label_set = engine.hypothetical_labels(label_set, labels)
        named = {
            str(k): frozenset((6, int(v)) for v in [vv])
            for k, vv in (spec.get("namedPorts") or {}).items()
        }
        number = engine.identities.by_labels.get(label_set)
        if number is not None and not named:
            named = engine.named_ports.get(number, {})
        text = f"{namespace}/{{{','.join(f'{k}={v}' for k, v in sorted(labels.items()))}}}"
        audit = bool(ns and ns.audit)
        return EndpointRef(text, label_set, True, number, None, named, audit=audit)
    text = spec.strip()
    if text.startswith(HOST_PREFIX):
        return _resolve_host(engine, text[len(HOST_PREFIX) :])
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None:
        namespace, _, name = text.partition("/")
        key = PodKey(namespace, name) if name else PodKey("default", namespace)
        if key not in engine.pod_identity:
            raise UnknownEndpoint(
                f"{text!r} is neither an IP address nor a known pod (namespace/name)"
            )
        number = engine.pod_identity[key]
        ips = engine.pods[key].ips
        return EndpointRef(
            str(key),
            engine.pod_labels(key),
            True,
            number,
            ips[0] if ips else None,
            engine.named_ports.get(number, {}),
            engine.pods[key].node,
            audit=engine.audit_mode(key),
        )
    for key, pod in engine.pods.items():
        if address in pod.ips and key in engine.pod_identity:
            number = engine.pod_identity[key]
            return EndpointRef(
                f"{key} ({address})",
                engine.pod_labels(key),
                True,
                number,
                address,
                engine.named_ports.get(number, {}),
                pod.node,
                audit=engine.audit_mode(key),
            )
    return _resolve_outside(engine, address)


def _resolve_outside(engine: Engine, address: IPAddress) -> EndpointRef:
    network = ipaddress.ip_network(address)
    for node in engine.nodes.values():
        if address in node.ips:
            number = (
                ReservedIdentity.HOST
                if node.name == engine.local_node
                else ReservedIdentity.REMOTE_NODE
            )
            return EndpointRef(
                f"node {node.name} ({address})",
                reserved_labels(number.label),
                False,
                int(number),
                address,
            )
    if address in engine.kube_apiserver_ips:
        number = ReservedIdentity.KUBE_APISERVER
        return EndpointRef(
            f"kube-apiserver ({address})",
            reserved_labels(number.label),
            False,
            int(number),
            address,
        )
    best = None
    for prefix, cidr_id in engine.identities.cidr_ids.items():
        if prefix.version == network.version and network.subnet_of(prefix):  # type: ignore[arg-type]
            if best is None or prefix.prefixlen > best[0].prefixlen:
                best = (prefix, cidr_id)
    if best is not None:
        return EndpointRef(
            f"{address} (cidr {best[0]})",
            engine.identities.labels[best[1]],
            False,
            best[1],
            address,
        )
    number = ReservedIdentity.WORLD_IPV4 if address.version == 4 else ReservedIdentity.WORLD_IPV6
    return EndpointRef(
        f"{address} (world)", reserved_labels(number.label), False, int(number), address
    )


def _port_rule_matches(
    rule: Rule, protocol: int, port: int, named: NamedPortMap
) -> tuple[bool, L7Rules]:
    """(matches, the L7 rules of the port rules that match: empty when none has any)."""
    if rule.ports is None:
        return True, L7Rules()
    matched = False
    l7 = L7Rules()
    for port_rule in rule.ports:
        for spec in port_rule.ports:
            if isinstance(spec, PortRange):
                hit = spec.covers(protocol, port)
            else:
                assert isinstance(spec, NamedPort)
                hit = any(
                    p == port
                    and (spec.protocol is None or spec.protocol == proto)
                    and proto == protocol
                    for proto, p in named.get(spec.name, ())
                )
            if hit:
                matched = True
                l7 = L7Rules(l7.http + port_rule.l7.http, l7.dns + port_rule.l7.dns)
                break
    return matched, l7


# What an allow without L7 rules adds to the L7 rules of others on the same port and peer:
# everything is allowed at L7 (Cilium's L7 wildcard when an L3/L4 rule meets an L7 one).
_L7_ALLOW_ALL = L7Rules((HttpRule(),), (DnsRule(match_pattern="*"),))


def _merged_l7(allows: list[L7Rules]) -> L7Rules:
    if not any(allows):
        return L7Rules()
    merged = L7Rules()
    for rules in allows:
        rules = rules or _L7_ALLOW_ALL
        merged = L7Rules(merged.http + rules.http, merged.dns + rules.dns)
    return merged


def evaluate(
    engine: Engine,
    subject: EndpointRef,
    peer: EndpointRef,
    direction: Direction,
    protocol: int,
    port: int,
) -> DirectionVerdict:
    """The verdict of `direction` at `subject` for traffic with `peer`."""
    # Named ports belong to the destination: the subject on ingress, the peer on egress.
    named = subject.named_ports if direction is Direction.INGRESS else peer.named_ports
    registry = engine.registry
    tiers: dict[Tier, list[tuple[Rule, Action, L7Rules, bool]]] = {
        Tier.ADMIN: [],
        Tier.NORMAL: [],
        Tier.BASELINE: [],
    }
    isolated_by: list[PolicyKey] = []
    isolation_audited = True  # the default deny only reports if every isolator audits
    peer = seen_by(peer, subject)
    if subject.host is not None:
        # A host endpoint: only nodeSelector parts select it, never pod selectors.
        parts = engine.host_parts(subject.host)
    else:
        parts = [
            (policy, part)
            for policy in engine.ordered_policies()
            for part in policy.parts
            if part.subject is not None and part.subject.matches(subject.labels)
        ]
    for policy, part in parts:
        if direction in part.isolates and policy.tier is Tier.NORMAL:
            isolated_by.append(policy.key)
            isolation_audited = isolation_audited and policy.audit
        for rule in part.rules:
            if rule.direction is not direction:
                continue
            if not peers_match(rule.peers, peer.labels, engine):
                continue
            hit, l7 = _port_rule_matches(rule, protocol, port, named)
            if hit:
                tiers[policy.tier].append((rule, rule.action, l7, policy.audit))

    def verdict(
        rule: Rule, tier: Tier, l7: L7Rules, audit: bool, passed: tuple[RuleRef, ...]
    ) -> DirectionVerdict:
        text = rule.peers.describe()
        rule_id = registry.rule(rule.ref, direction, tier, rule.action, text, audit)
        info = registry.info(rule_id)
        allowed = rule.action is Action.ALLOW
        return DirectionVerdict(
            direction,
            allowed,
            rule_id,
            info,
            info.describe(""),
            bool(l7) and allowed,
            passed,
            l7_rules=l7 if allowed else L7Rules(),
        )

    passed: tuple[RuleRef, ...] = ()
    for rule, action, l7, audit in tiers[Tier.ADMIN]:
        if action is Action.PASS:
            passed = (rule.ref,)
            break
        return verdict(rule, Tier.ADMIN, l7, audit, ())
    denies = [item for item in tiers[Tier.NORMAL] if item[1] is Action.DENY]
    if denies:
        return verdict(denies[0][0], Tier.NORMAL, L7Rules(), denies[0][3], passed)
    allows = [item for item in tiers[Tier.NORMAL] if item[1] is Action.ALLOW]
    if allows:
        merged = _merged_l7([item[2] for item in allows])
        return verdict(allows[0][0], Tier.NORMAL, merged, allows[0][3], passed)
    if isolated_by:
        isolators = tuple(sorted(set(isolated_by)))
        rule_id = registry.default_deny(direction, isolators, isolation_audited)
        info = registry.info(rule_id)
        return DirectionVerdict(direction, False, rule_id, info, info.describe(""), False, passed)
    for rule, action, l7, audit in tiers[Tier.BASELINE]:
        if action is Action.PASS:
            passed += (rule.ref,)
            break
        return verdict(rule, Tier.BASELINE, l7, audit, passed)
    rule_id = registry.no_policy(direction)
    info = registry.info(rule_id)
    return DirectionVerdict(direction, True, rule_id, info, info.describe(""), False, passed)


def _at(endpoint: EndpointRef, verdict: DirectionVerdict) -> DirectionVerdict:
    """The verdict as `endpoint` applies it: in audit mode its denies only report."""
    return dataclasses.replace(verdict, endpoint_audit=True) if endpoint.audit else verdict


def explain(
    engine: Engine,
    source: str | Mapping[str, Any] | EndpointRef,
    destination: str | Mapping[str, Any] | EndpointRef,
    port: int,
    protocol: str | int = "TCP",
) -> Explanation:
    src = source if isinstance(source, EndpointRef) else resolve_endpoint(engine, source)
    dst = (
        destination
        if isinstance(destination, EndpointRef)
        else resolve_endpoint(engine, destination)
    )
    proto = protocol if isinstance(protocol, int) else parse_protocol_name(protocol)
    egress = (
        _at(src, evaluate(engine, src, dst, Direction.EGRESS, proto, port)) if src.managed else None
    )
    ingress = (
        _at(dst, evaluate(engine, dst, src, Direction.INGRESS, proto, port))
        if dst.managed
        else None
    )
    return Explanation(src, dst, proto, port, egress, ingress)
