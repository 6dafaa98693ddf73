"""`networking.k8s.io/v1` NetworkPolicy -> Policy, with the upstream semantics.

- policyTypes defaults to [Ingress] plus Egress when `spec.egress` has rules.
- A direction in policyTypes isolates the selected pods for that direction.
- A rule with missing or empty `from`/`to` matches every peer; missing or
  empty `ports` matches every port and protocol.
- A peer with only podSelector selects pods in the policy's namespace; only
  namespaceSelector selects all pods of matching namespaces; both in one peer
  select the intersection; two peers are a union.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from septum.operator.engine.cidrs import parse_cidr_peer
from septum.operator.engine.errors import PolicyError
from septum.operator.engine.paths import (
    ErrorCollector,
    expect_int,
    expect_list,
    expect_mapping,
    expect_str,
    field,
    index,
    optional_list,
    reject_unknown,
)
from septum.operator.engine.ports import (
    PROTO_TCP,
    PROTOCOL_NUMBERS,
    NamedPort,
    PortRange,
    PortSpec,
    check_port,
    check_port_name,
)
from septum.operator.engine.rules import (
    Action,
    CidrPeer,
    Direction,
    Kind,
    Peers,
    Policy,
    PolicyKey,
    PolicyPart,
    PortRule,
    Rule,
    RuleRef,
    Tier,
)
from septum.operator.engine.selectors import (
    Requirement,
    Selector,
    in_namespace,
    namespace_key,
    parse_label_selector,
    pod_key,
)


def parse_protocol(raw: Any, path: str) -> int:
    if raw is None:
        return PROTO_TCP
    name = expect_str(raw, path)
    if name not in PROTOCOL_NUMBERS:
        raise PolicyError(path, f"unknown protocol {name!r} (expected TCP, UDP or SCTP)")
    return PROTOCOL_NUMBERS[name]


def _parse_port(raw: Any, path: str) -> PortSpec:
    obj = expect_mapping(raw, path)
    reject_unknown(obj, {"protocol", "port", "endPort"}, path)
    protocol = parse_protocol(obj.get("protocol"), field(path, "protocol"))
    port = obj.get("port")
    end_port = obj.get("endPort")
    if port is None:
        if end_port is not None:
            raise PolicyError(field(path, "endPort"), "endPort needs a numeric port")
        return PortRange(protocol)
    if isinstance(port, str) and not port.isdigit():
        if end_port is not None:
            raise PolicyError(field(path, "endPort"), "endPort cannot be used with a named port")
        return NamedPort(check_port_name(port, field(path, "port")), protocol)
    number = check_port(
        int(port) if isinstance(port, str) else expect_int(port, field(path, "port")),
        field(path, "port"),
    )
    if end_port is None:
        return PortRange(protocol, number, number)
    end = check_port(expect_int(end_port, field(path, "endPort")), field(path, "endPort"))
    if end < number:
        raise PolicyError(field(path, "endPort"), f"endPort {end} is below port {number}")
    return PortRange(protocol, number, end)


def _parse_peer(raw: Any, path: str, namespace: str) -> tuple[Selector | None, CidrPeer | None]:
    obj = expect_mapping(raw, path)
    reject_unknown(obj, {"podSelector", "namespaceSelector", "ipBlock"}, path)
    if "ipBlock" in obj and obj["ipBlock"] is not None:
        if obj.get("podSelector") is not None or obj.get("namespaceSelector") is not None:
            raise PolicyError(
                path, "ipBlock cannot be combined with podSelector or namespaceSelector"
            )
        block_path = field(path, "ipBlock")
        block = expect_mapping(obj["ipBlock"], block_path)
        reject_unknown(block, {"cidr", "except"}, block_path)
        cidr = expect_str(block.get("cidr"), field(block_path, "cidr"))
        excepts_raw = expect_list(block.get("except") or [], field(block_path, "except"))
        excepts = [
            expect_str(e, index(field(block_path, "except"), i)) for i, e in enumerate(excepts_raw)
        ]
        # Upstream: an ipBlock matches pod addresses too (Septum's own CIDR peers do not).
        peer = parse_cidr_peer(
            cidr, excepts, field(block_path, "cidr"), field(block_path, "except")
        )
        return None, dataclasses.replace(peer, pods=True)
    pod_raw = obj.get("podSelector")
    ns_raw = obj.get("namespaceSelector")
    if pod_raw is None and ns_raw is None:
        raise PolicyError(path, "a peer needs podSelector, namespaceSelector or ipBlock")
    requirements: tuple[Requirement, ...] = ()
    if pod_raw is not None:
        requirements += parse_label_selector(pod_raw, field(path, "podSelector"), pod_key, own=True)
    if ns_raw is not None:
        requirements += parse_label_selector(
            ns_raw, field(path, "namespaceSelector"), namespace_key
        )
    else:
        requirements = in_namespace(requirements, namespace)
    return Selector(tuple(sorted(requirements, key=str))), None


def _parse_rule(raw: Any, path: str, direction: Direction, key: PolicyKey) -> Rule:
    obj = expect_mapping(raw if raw is not None else {}, path)
    peers_key = "from" if direction is Direction.INGRESS else "to"
    reject_unknown(obj, {peers_key, "ports"}, path)
    errors = ErrorCollector()
    peer_items: Sequence[Any] = []
    with errors.checking():
        peer_items = optional_list(obj, peers_key, path) or []
    selectors: list[Selector] = []
    cidrs: list[CidrPeer] = []
    for i, item in enumerate(peer_items):
        with errors.checking():
            selector, cidr = _parse_peer(item, index(field(path, peers_key), i), key.namespace)
            if selector is not None:
                selectors.append(selector)
            if cidr is not None:
                cidrs.append(cidr)
    peers = (
        Peers(any_peer=True)
        if not peer_items
        else Peers(selectors=tuple(selectors), cidrs=tuple(cidrs))
    )
    port_items: Sequence[Any] = []
    with errors.checking():
        port_items = optional_list(obj, "ports", path) or []
    parsed: list[PortSpec] = []
    for i, item in enumerate(port_items):
        with errors.checking():
            parsed.append(_parse_port(item, index(field(path, "ports"), i)))
    errors.raise_any()
    ports = tuple(parsed)
    return Rule(
        RuleRef(key, path),
        direction,
        Action.ALLOW,
        peers,
        (PortRule(ports),) if ports else None,
    )


def parse_network_policy(obj: Mapping[str, Any], namespace: str, name: str) -> Policy:
    key = PolicyKey(Kind.NETWORK_POLICY.value, namespace, name)
    spec = expect_mapping(obj.get("spec"), "spec")
    reject_unknown(spec, {"podSelector", "policyTypes", "ingress", "egress"}, "spec")
    errors = ErrorCollector()
    subject = Selector(())
    with errors.checking():
        if "podSelector" not in spec:
            raise PolicyError("spec.podSelector", "required field is missing")
        subject_reqs = parse_label_selector(
            spec.get("podSelector"), "spec.podSelector", pod_key, own=True
        )
        subject = Selector(in_namespace(subject_reqs, namespace))
    ingress_raw: Sequence[Any] = []
    egress_raw: Sequence[Any] = []
    types_raw: Sequence[Any] | None = None
    with errors.checking():
        ingress_raw = optional_list(spec, "ingress", "spec") or []
    with errors.checking():
        egress_raw = optional_list(spec, "egress", "spec") or []
    with errors.checking():
        types_raw = optional_list(spec, "policyTypes", "spec")
    if types_raw:
        isolates: set[Direction] = set()
        for i, item in enumerate(types_raw):
            with errors.checking():
                text = expect_str(item, index("spec.policyTypes", i))
                if text not in ("Ingress", "Egress"):
                    raise PolicyError(index("spec.policyTypes", i), f"unknown policy type {text!r}")
                isolates.add(Direction.INGRESS if text == "Ingress" else Direction.EGRESS)
    else:
        # The API server's defaulting: Ingress always, Egress when egress rules exist.
        isolates = {Direction.INGRESS}
        if egress_raw:
            isolates.add(Direction.EGRESS)
    rules: list[Rule] = []
    # Rules of a direction not in policyTypes are ignored, as upstream does.
    for direction, section, items in (
        (Direction.INGRESS, "spec.ingress", ingress_raw),
        (Direction.EGRESS, "spec.egress", egress_raw),
    ):
        if direction not in isolates:
            continue
        for i, item in enumerate(items):
            with errors.checking():
                rules.append(_parse_rule(item, index(section, i), direction, key))
    errors.raise_any()
    part = PolicyPart(subject, None, frozenset(isolates), tuple(rules))
    return Policy(key, Tier.NORMAL, 0, (part,))
