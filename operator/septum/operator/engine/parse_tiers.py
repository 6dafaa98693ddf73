"""Admin tiers from sigs.k8s.io/network-policy-api -> Policy.

- v1alpha2 `ClusterNetworkPolicy`: `spec.tier` Admin or Baseline, priority
  0-1000, actions Accept / Deny / Pass, `protocols` port matching.
- v1alpha1 `AdminNetworkPolicy` (Admin tier; Allow / Deny / Pass) and
  `BaselineAdminNetworkPolicy` (Baseline tier, a singleton named `default`;
  Allow / Deny), with `ports` port matching.

Within a tier, policies are evaluated by ascending priority and rules in list
order; the first rule that matches decides (Pass hands over to the next tier).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from septum.operator.engine.cidrs import parse_cidr
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
    PROTO_SCTP,
    PROTO_TCP,
    PROTO_UDP,
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
    Selector,
    namespace_key,
    node_key,
    parse_label_selector,
    pod_key,
)

MAX_PRIORITY = 1000
MAX_RULES_V1ALPHA1 = 100
MAX_RULES_V1ALPHA2 = 25


def _namespaces_selector(raw: Any, path: str) -> Selector:
    return Selector(parse_label_selector(raw, path, namespace_key))


def _pods_selector(raw: Any, path: str) -> Selector:
    """`pods` (NamespacedPod): `podSelector` is required; `namespaceSelector` is optional and,
    omitted like empty, selects every namespace (network-policy-api v0.3.0's types and its
    conformance suite's `pod-selector-rules`, a subject chosen by pod label alone)."""
    obj = expect_mapping(raw, path)
    reject_unknown(obj, {"namespaceSelector", "podSelector"}, path)
    if "podSelector" not in obj:
        raise PolicyError(field(path, "podSelector"), "required field is missing")
    requirements = parse_label_selector(
        obj.get("namespaceSelector") or {}, field(path, "namespaceSelector"), namespace_key
    )
    requirements += parse_label_selector(
        obj["podSelector"], field(path, "podSelector"), pod_key, own=True
    )
    return Selector(tuple(sorted(requirements, key=str)))


def _subject_and_rules(
    spec: Mapping[str, Any], key: PolicyKey, actions: Mapping[str, Action], v1alpha2: bool
) -> tuple[int | None, Selector, list[Rule]]:
    """`spec.priority` (None where the kind has none), `spec.subject` and the rules."""
    errors = ErrorCollector()
    priority: int | None = None
    subject = Selector(())
    rules: list[Rule] = []
    if key.kind != Kind.BASELINE_ADMIN_NETWORK_POLICY.value:
        with errors.checking():
            priority = _priority(spec)
    with errors.checking():
        if spec.get("subject") is None:
            raise PolicyError("spec.subject", "required field is missing")
        subject = _subject(spec["subject"], "spec.subject")
    with errors.checking():
        rules = _rules(spec, key, actions, v1alpha2)
    errors.raise_any()
    return priority, subject, rules


def _subject(raw: Any, path: str) -> Selector:
    obj = expect_mapping(raw, path)
    reject_unknown(obj, {"namespaces", "pods"}, path)
    present = [k for k in ("namespaces", "pods") if obj.get(k) is not None]
    if len(present) != 1:
        raise PolicyError(path, "exactly one of namespaces or pods is required")
    if present[0] == "namespaces":
        return _namespaces_selector(obj["namespaces"], field(path, "namespaces"))
    return _pods_selector(obj["pods"], field(path, "pods"))


def _peers(raw: Any, path: str, direction: Direction, action: Action) -> tuple[Peers, bool]:
    """Union of the peer list; the flag says whether a non-pod peer (networks/nodes) is present.

    `networks` match cluster-internal addresses too (network-policy-api: "cluster-internal
    traffic will be checked against the rule as well"): pods and nodes by address. A Deny
    matches a node identity when it holds any of its addresses, never fewer than upstream.
    """
    items = expect_list(raw, path)
    if not items:
        raise PolicyError(path, "at least one peer is required")
    selectors: list[Selector] = []
    cidrs: list[CidrPeer] = []
    nodes: list[Selector] = []
    fqdns: list[str] = []
    allowed = {"namespaces", "pods"}
    if direction is Direction.EGRESS:
        allowed |= {"nodes", "networks", "domainNames"}
    for i, item in enumerate(items):
        item_path = index(path, i)
        obj = expect_mapping(item, item_path)
        reject_unknown(obj, allowed, item_path)
        present = [k for k in obj if obj[k] is not None]
        if len(present) != 1:
            raise PolicyError(item_path, f"exactly one of {', '.join(sorted(allowed))} is required")
        which = present[0]
        which_path = field(item_path, which)
        if which == "namespaces":
            selectors.append(_namespaces_selector(obj[which], which_path))
        elif which == "pods":
            selectors.append(_pods_selector(obj[which], which_path))
        elif which == "nodes":
            nodes.append(
                Selector(
                    parse_label_selector(obj[which], which_path, node_key), frozenset({"node"})
                )
            )
        elif which == "networks":
            nets = expect_list(obj[which], which_path)
            if not nets:
                raise PolicyError(which_path, "at least one CIDR is required")
            for k, net in enumerate(nets):
                net_path = index(which_path, k)
                network = parse_cidr(expect_str(net, net_path), net_path)
                cidrs.append(CidrPeer(network, pods=True, any_node_address=action is Action.DENY))
        else:
            for k, name in enumerate(expect_list(obj[which], which_path)):
                fqdns.append(expect_str(name, index(which_path, k)))
    non_pod = bool(cidrs or nodes or fqdns)
    return Peers(False, tuple(selectors), tuple(cidrs), (), tuple(nodes), tuple(fqdns)), non_pod


def _ports_v1alpha1(raw: list[Any], path: str) -> tuple[PortSpec, ...]:
    specs: list[PortSpec] = []
    errors = ErrorCollector()
    for i, item in enumerate(raw):
        with errors.checking():
            specs.append(_ports_v1alpha1_entry(item, index(path, i)))
    errors.raise_any()
    return tuple(specs)


def _ports_v1alpha1_entry(item: Any, item_path: str) -> PortSpec:
    obj = expect_mapping(item, item_path)
    reject_unknown(obj, {"portNumber", "namedPort", "portRange"}, item_path)
    present = [k for k in obj if obj[k] is not None]
    if len(present) != 1:
        raise PolicyError(
            item_path, "exactly one of portNumber, namedPort or portRange is required"
        )
    which = present[0]
    wpath = field(item_path, which)
    if which == "namedPort":
        return NamedPort(check_port_name(expect_str(obj[which], wpath), wpath))
    pobj = expect_mapping(obj[which], wpath)
    proto_name = expect_str(pobj.get("protocol", "TCP"), field(wpath, "protocol"))
    if proto_name not in PROTOCOL_NUMBERS:
        raise PolicyError(
            field(wpath, "protocol"),
            f"unknown protocol {proto_name!r} (expected TCP, UDP or SCTP)",
        )
    proto = PROTOCOL_NUMBERS[proto_name]
    if which == "portNumber":
        reject_unknown(pobj, {"protocol", "port"}, wpath)
        port = check_port(expect_int(pobj.get("port"), field(wpath, "port")), field(wpath, "port"))
        return PortRange(proto, port, port)
    else:
        reject_unknown(pobj, {"protocol", "start", "end"}, wpath)
        start = check_port(
            expect_int(pobj.get("start"), field(wpath, "start")), field(wpath, "start")
        )
        end = check_port(expect_int(pobj.get("end"), field(wpath, "end")), field(wpath, "end"))
        if start >= end:
            raise PolicyError(field(wpath, "end"), f"end {end} must be greater than start {start}")
        return PortRange(proto, start, end)


def _ports_v1alpha2(raw: list[Any], path: str) -> tuple[PortSpec, ...]:
    specs: list[PortSpec] = []
    errors = ErrorCollector()
    for i, item in enumerate(raw):
        with errors.checking():
            specs.append(_ports_v1alpha2_entry(item, index(path, i)))
    errors.raise_any()
    return tuple(specs)


def _ports_v1alpha2_entry(item: Any, item_path: str) -> PortSpec:
    obj = expect_mapping(item, item_path)
    reject_unknown(obj, {"tcp", "udp", "sctp", "destinationNamedPort"}, item_path)
    present = [k for k in obj if obj[k] is not None]
    if len(present) != 1:
        raise PolicyError(
            item_path, "exactly one of tcp, udp, sctp or destinationNamedPort is required"
        )
    which = present[0]
    wpath = field(item_path, which)
    if which == "destinationNamedPort":
        return NamedPort(check_port_name(expect_str(obj[which], wpath), wpath))
    proto = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "sctp": PROTO_SCTP}[which]
    pobj = expect_mapping(obj[which], wpath)
    reject_unknown(pobj, {"destinationPort"}, wpath)
    if pobj.get("destinationPort") is None:
        return PortRange(proto)
    dpath = field(wpath, "destinationPort")
    dport = expect_mapping(pobj["destinationPort"], dpath)
    reject_unknown(dport, {"number", "range"}, dpath)
    if (dport.get("number") is None) == (dport.get("range") is None):
        raise PolicyError(dpath, "exactly one of number or range is required")
    if dport.get("number") is not None:
        number = check_port(
            expect_int(dport["number"], field(dpath, "number")), field(dpath, "number")
        )
        return PortRange(proto, number, number)
    else:
        rpath = field(dpath, "range")
        robj = expect_mapping(dport["range"], rpath)
        reject_unknown(robj, {"start", "end"}, rpath)
        start = check_port(
            expect_int(robj.get("start"), field(rpath, "start")), field(rpath, "start")
        )
        end = check_port(expect_int(robj.get("end"), field(rpath, "end")), field(rpath, "end"))
        if start >= end:
            raise PolicyError(field(rpath, "end"), f"end {end} must be greater than start {start}")
        return PortRange(proto, start, end)


def _priority(spec: Mapping[str, Any]) -> int:
    if "priority" not in spec:
        raise PolicyError("spec.priority", "required field is missing")
    priority = expect_int(spec["priority"], "spec.priority")
    if not 0 <= priority <= MAX_PRIORITY:
        raise PolicyError("spec.priority", f"{priority} is out of range (0-{MAX_PRIORITY})")
    return priority


def _rules(
    spec: Mapping[str, Any],
    key: PolicyKey,
    actions: Mapping[str, Action],
    v1alpha2: bool,
) -> list[Rule]:
    rules: list[Rule] = []
    errors = ErrorCollector()
    limit = MAX_RULES_V1ALPHA2 if v1alpha2 else MAX_RULES_V1ALPHA1
    for section, direction in (("ingress", Direction.INGRESS), ("egress", Direction.EGRESS)):
        items: Sequence[Any] = []
        with errors.checking():
            items = optional_list(spec, section, "spec") or []
            if len(items) > limit:
                raise PolicyError(
                    field("spec", section), f"at most {limit} rules are allowed, got {len(items)}"
                )
        for i, item in enumerate(items):
            with errors.checking():
                path = index(field("spec", section), i)
                rules.append(_rule(item, path, direction, key, actions, v1alpha2))
    errors.raise_any()
    return rules


def _rule(
    item: Any,
    path: str,
    direction: Direction,
    key: PolicyKey,
    actions: Mapping[str, Action],
    v1alpha2: bool,
) -> Rule:
    peers_key = "from" if direction is Direction.INGRESS else "to"
    obj = expect_mapping(item, path)
    ports_key = "protocols" if v1alpha2 else "ports"
    reject_unknown(obj, {"name", "action", peers_key, ports_key}, path)
    errors = ErrorCollector()
    name = ""
    action = Action.ALLOW
    with errors.checking():
        name = expect_str(obj.get("name", ""), field(path, "name"))
    with errors.checking():
        action_name = expect_str(obj.get("action"), field(path, "action"))
        if action_name not in actions:
            raise PolicyError(
                field(path, "action"),
                f"unknown action {action_name!r} (expected {', '.join(actions)})",
            )
        action = actions[action_name]
    peers, non_pod = Peers(), False
    with errors.checking():
        if obj.get(peers_key) is None:
            raise PolicyError(field(path, peers_key), "required field is missing")
        peers, non_pod = _peers(obj[peers_key], field(path, peers_key), direction, action)
    ports: tuple[PortSpec, ...] = ()
    with errors.checking():
        ports_raw = optional_list(obj, ports_key, path)
        if ports_raw is not None:
            if not ports_raw:
                raise PolicyError(field(path, ports_key), "at least one entry is required when set")
            parse = _ports_v1alpha2 if v1alpha2 else _ports_v1alpha1
            ports = parse(list(ports_raw), field(path, ports_key))
            if non_pod and any(isinstance(p, NamedPort) for p in ports):
                raise PolicyError(
                    field(path, ports_key),
                    "named ports cannot be used with networks, nodes or domainNames peers",
                )
    errors.raise_any()
    return Rule(
        RuleRef(key, path, name),
        direction,
        action,
        peers,
        (PortRule(ports),) if ports else None,
    )


_V1ALPHA2_ACTIONS = {"Accept": Action.ALLOW, "Deny": Action.DENY, "Pass": Action.PASS}


def parse_cluster_network_policy(obj: Mapping[str, Any], name: str) -> Policy:
    key = PolicyKey(Kind.CLUSTER_NETWORK_POLICY.value, "", name)
    spec = expect_mapping(obj.get("spec"), "spec")
    reject_unknown(spec, {"tier", "priority", "subject", "ingress", "egress"}, "spec")
    tier_name = expect_str(spec.get("tier"), "spec.tier")
    if tier_name not in ("Admin", "Baseline"):
        raise PolicyError("spec.tier", f"unknown tier {tier_name!r} (expected Admin or Baseline)")
    tier = Tier.ADMIN if tier_name == "Admin" else Tier.BASELINE
    priority, subject, rules = _subject_and_rules(spec, key, _V1ALPHA2_ACTIONS, v1alpha2=True)
    assert priority is not None
    part = PolicyPart(subject, None, frozenset(), tuple(rules))
    return Policy(key, tier, priority, (part,))


def parse_admin_network_policy(obj: Mapping[str, Any], name: str) -> Policy:
    key = PolicyKey(Kind.ADMIN_NETWORK_POLICY.value, "", name)
    spec = expect_mapping(obj.get("spec"), "spec")
    reject_unknown(spec, {"priority", "subject", "ingress", "egress"}, "spec")
    actions = {"Allow": Action.ALLOW, "Deny": Action.DENY, "Pass": Action.PASS}
    priority, subject, rules = _subject_and_rules(spec, key, actions, v1alpha2=False)
    assert priority is not None
    return Policy(
        key, Tier.ADMIN, priority, (PolicyPart(subject, None, frozenset(), tuple(rules)),)
    )


def parse_baseline_admin_network_policy(obj: Mapping[str, Any], name: str) -> Policy:
    key = PolicyKey(Kind.BASELINE_ADMIN_NETWORK_POLICY.value, "", name)
    if name != "default":
        raise PolicyError(
            "metadata.name", f"must be 'default' (the baseline policy is a singleton), got {name!r}"
        )
    spec = expect_mapping(obj.get("spec"), "spec")
    reject_unknown(spec, {"subject", "ingress", "egress"}, "spec")
    actions = {"Allow": Action.ALLOW, "Deny": Action.DENY}
    _, subject, rules = _subject_and_rules(spec, key, actions, v1alpha2=False)
    # Sort after every v1alpha2 Baseline policy of any priority: it has no priority field.
    return Policy(
        key,
        Tier.BASELINE,
        MAX_PRIORITY + 1,
        (PolicyPart(subject, None, frozenset(), tuple(rules)),),
    )
