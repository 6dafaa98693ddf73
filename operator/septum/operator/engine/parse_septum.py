"""SeptumNetworkPolicy / SeptumClusterwideNetworkPolicy -> Policy, in Cilium's shape.

A CiliumNetworkPolicy ports by changing apiVersion and kind only. Semantics
follow Cilium: allows add up, denies win, a direction with rules (or with
`enableDefaultDeny` set) is default-deny, a namespaced policy's endpoint
selectors are confined to its namespace unless they name one, CIDR rules never
select in-cluster endpoints, an empty rule `{}` allows nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from septum.operator.engine.cidrs import parse_cidr, parse_cidr_peer
from septum.operator.engine.errors import PolicyError
from septum.operator.engine.labels import SOURCE_K8S, SOURCE_RESERVED
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
    L4_PROTOCOLS,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTOCOL_NUMBERS,
    NamedPort,
    PortRange,
    PortSpec,
    check_port,
    check_port_name,
)
from septum.operator.engine.rules import (
    MISMATCH_ACTIONS,
    Action,
    CidrPeer,
    Direction,
    DnsRule,
    HeaderMatch,
    HttpRule,
    Kind,
    L7Rules,
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
    cilium_key,
    in_namespace,
    names_namespace,
    node_key,
    parse_label_selector,
)
from septum.wellknown.icmp import ICMPV4_TYPES, ICMPV6_TYPES

ENTITIES = frozenset(
    {
        "all",
        "world",
        "world-ipv4",
        "world-ipv6",
        "cluster",
        "host",
        "remote-node",
        "kube-apiserver",
        "health",
        "init",
        "ingress",
        "unmanaged",
        "none",
    }
)

_SECTIONS = {
    "ingress": (Direction.INGRESS, Action.ALLOW),
    "ingressDeny": (Direction.INGRESS, Action.DENY),
    "egress": (Direction.EGRESS, Action.ALLOW),
    "egressDeny": (Direction.EGRESS, Action.DENY),
}
_UNSUPPORTED = {
    "fromRequires": "fromRequires is deprecated upstream and not supported",
    "toRequires": "toRequires is deprecated upstream and not supported",
    "fromGroups": "cloud provider groups are not supported",
    "toGroups": "cloud provider groups are not supported",
    "toServices": "toServices is not supported yet; select the backends with toEndpoints",
    "authentication": "mutual authentication is not supported",
}
_DNS_PATTERN = re.compile(r"^[-a-zA-Z0-9_.*]+$")


def _selector_sources(requirements: tuple[Requirement, ...]) -> frozenset[str]:
    named = {r.source for r in requirements if r.source is not None}
    if SOURCE_RESERVED in named:
        return frozenset({SOURCE_RESERVED})
    return frozenset({SOURCE_K8S})


def _endpoint_selector(raw: Any, path: str, namespace: str, subject: bool) -> Selector:
    requirements = parse_label_selector(raw, path, cilium_key)
    sources = _selector_sources(requirements)
    # Namespaced policies see their own namespace unless a peer selector names one;
    # a subject selector is always confined (Cilium does the same).
    if namespace and SOURCE_K8S in sources and (subject or not names_namespace(requirements)):
        requirements = in_namespace(requirements, namespace)
    return Selector(requirements, sources)


def _parse_regex(raw: Any, path: str) -> str:
    text = expect_str(raw, path)
    try:
        re.compile(text)
    except re.error as err:
        raise PolicyError(path, f"invalid regular expression {text!r}: {err}") from err
    return text


def _parse_header_matches(raw: Any, path: str) -> tuple[HeaderMatch, ...]:
    matches = []
    for i, item in enumerate(expect_list(raw or [], path)):
        item_path = index(path, i)
        obj = expect_mapping(item, item_path)
        reject_unknown(obj, {"name", "value", "mismatch", "secret"}, item_path)
        if "secret" in obj:  # Cilium reads the value from a Secret; Septum reads no Secrets
            raise PolicyError(field(item_path, "secret"), "secrets are not supported")
        name = expect_str(obj.get("name", ""), field(item_path, "name"))
        if not name:
            raise PolicyError(field(item_path, "name"), "a header name is required")
        mismatch = expect_str(obj.get("mismatch", ""), field(item_path, "mismatch"))
        if mismatch and mismatch not in MISMATCH_ACTIONS:
            raise PolicyError(
                field(item_path, "mismatch"),
                f"{mismatch!r} is not one of {', '.join(MISMATCH_ACTIONS)}",
            )
        value = expect_str(obj.get("value", ""), field(item_path, "value"))
        matches.append(HeaderMatch(name, value, mismatch))
    return tuple(matches)


def _parse_l7(raw: Any, path: str, direction: Direction, action: Action) -> L7Rules:
    if action is Action.DENY:
        raise PolicyError(path, "L7 rules are not allowed in a deny section")
    obj = expect_mapping(raw, path)
    reject_unknown(obj, {"http", "dns", "l7proto", "l7", "kafka"}, path)
    for unsupported in ("l7proto", "l7", "kafka"):
        if unsupported in obj:
            raise PolicyError(field(path, unsupported), f"{unsupported} rules are not supported")
    http: list[HttpRule] = []
    for i, item in enumerate(expect_list(obj.get("http") or [], field(path, "http"))):
        item_path = index(field(path, "http"), i)
        rule = expect_mapping(item, item_path)
        reject_unknown(rule, {"method", "path", "host", "headers", "headerMatches"}, item_path)
        headers = tuple(
            expect_str(h, index(field(item_path, "headers"), j))
            for j, h in enumerate(
                expect_list(rule.get("headers") or [], field(item_path, "headers"))
            )
        )
        http.append(
            HttpRule(
                method=_parse_regex(rule.get("method", ""), field(item_path, "method")),
                path=_parse_regex(rule.get("path", ""), field(item_path, "path")),
                host=_parse_regex(rule.get("host", ""), field(item_path, "host")),
                headers=headers,
                header_matches=_parse_header_matches(
                    rule.get("headerMatches"), field(item_path, "headerMatches")
                ),
            )
        )
    dns: list[DnsRule] = []
    for i, item in enumerate(expect_list(obj.get("dns") or [], field(path, "dns"))):
        item_path = index(field(path, "dns"), i)
        if direction is Direction.INGRESS:
            raise PolicyError(item_path, "DNS rules apply to egress only")
        rule = expect_mapping(item, item_path)
        reject_unknown(rule, {"matchName", "matchPattern"}, item_path)
        name = expect_str(rule.get("matchName", ""), field(item_path, "matchName"))
        pattern = expect_str(rule.get("matchPattern", ""), field(item_path, "matchPattern"))
        if bool(name) == bool(pattern):
            raise PolicyError(item_path, "exactly one of matchName or matchPattern is required")
        if name and (not _DNS_PATTERN.match(name.rstrip(".")) or "*" in name):
            raise PolicyError(field(item_path, "matchName"), f"invalid DNS name {name!r}")
        if pattern and not _DNS_PATTERN.match(pattern.rstrip(".")):
            raise PolicyError(field(item_path, "matchPattern"), f"invalid DNS pattern {pattern!r}")
        dns.append(DnsRule(name, pattern))
    if http and dns:  # Cilium's L7Rules is a union: one parser (one proxy) per port rule
        raise PolicyError(path, "http and dns rules cannot be mixed in one port rule")
    return L7Rules(tuple(http), tuple(dns))


def _parse_port_protocol(port_obj: Mapping[str, Any], path: str) -> list[PortSpec]:
    reject_unknown(port_obj, {"port", "endPort", "protocol"}, path)
    proto_name = expect_str(port_obj.get("protocol", "ANY"), field(path, "protocol"))
    if proto_name == "ANY":
        protocols: tuple[int, ...] = L4_PROTOCOLS
    elif proto_name in PROTOCOL_NUMBERS:
        protocols = (PROTOCOL_NUMBERS[proto_name],)
    else:
        raise PolicyError(
            field(path, "protocol"),
            f"unknown protocol {proto_name!r} (expected TCP, UDP, SCTP or ANY)",
        )
    raw_port = port_obj.get("port")
    end_raw = port_obj.get("endPort")
    port_text = str(raw_port) if raw_port is not None else "0"
    if not port_text.isdigit():
        if end_raw is not None:
            raise PolicyError(field(path, "endPort"), "endPort cannot be used with a named port")
        name = check_port_name(port_text, field(path, "port"))
        return [NamedPort(name, p) for p in protocols]
    number = check_port(int(port_text), field(path, "port"), allow_zero=True)
    if number == 0:
        if end_raw is not None:
            raise PolicyError(field(path, "endPort"), "endPort needs a non-zero port")
        return [PortRange(p) for p in protocols]
    end = number
    if end_raw is not None:
        end = check_port(expect_int(end_raw, field(path, "endPort")), field(path, "endPort"))
        if end < number:
            raise PolicyError(field(path, "endPort"), f"endPort {end} is below port {number}")
    return [PortRange(p, number, end) for p in protocols]


def _parse_to_ports(
    raw: list[Any], path: str, direction: Direction, action: Action
) -> list[PortRule]:
    rules: list[PortRule] = []
    errors = ErrorCollector()
    for i, item in enumerate(raw):
        with errors.checking():
            rules.append(_parse_port_rule(item, index(path, i), direction, action))
    errors.raise_any()
    return rules


def _parse_port_rule(raw: Any, path: str, direction: Direction, action: Action) -> PortRule:
    obj = expect_mapping(raw, path)
    reject_unknown(
        obj,
        {"ports", "rules", "terminatingTLS", "originatingTLS", "serverNames", "listener"},
        path,
    )
    for unsupported in ("terminatingTLS", "originatingTLS", "serverNames", "listener"):
        if unsupported in obj:
            raise PolicyError(field(path, unsupported), f"{unsupported} is not supported")
    errors = ErrorCollector()
    ports: list[PortSpec] = []
    for j, port in enumerate(expect_list(obj.get("ports") or [], field(path, "ports"))):
        port_path = index(field(path, "ports"), j)
        with errors.checking():
            ports += _parse_port_protocol(expect_mapping(port, port_path), port_path)
    if not ports:
        ports = [PortRange(p) for p in L4_PROTOCOLS]
    l7 = L7Rules()
    if obj.get("rules") is not None:
        with errors.checking():
            l7 = _parse_l7(obj["rules"], field(path, "rules"), direction, action)
    errors.raise_any()
    return PortRule(tuple(ports), l7)


def _parse_icmps(raw: list[Any], path: str) -> list[PortRule]:
    ports: list[PortSpec] = []
    for i, item in enumerate(raw):
        item_path = index(path, i)
        obj = expect_mapping(item, item_path)
        reject_unknown(obj, {"fields"}, item_path)
        for j, fld in enumerate(expect_list(obj.get("fields") or [], field(item_path, "fields"))):
            fpath = index(field(item_path, "fields"), j)
            fobj = expect_mapping(fld, fpath)
            reject_unknown(fobj, {"type", "family"}, fpath)
            family = expect_str(fobj.get("family", "IPv4"), field(fpath, "family"))
            if family not in ("IPv4", "IPv6"):
                raise PolicyError(
                    field(fpath, "family"), f"unknown family {family!r} (expected IPv4 or IPv6)"
                )
            names = ICMPV4_TYPES if family == "IPv4" else ICMPV6_TYPES
            proto = PROTO_ICMP if family == "IPv4" else PROTO_ICMPV6
            raw_type = fobj.get("type")
            type_path = field(fpath, "type")
            if isinstance(raw_type, str) and not raw_type.isdigit():
                if raw_type not in names:
                    raise PolicyError(type_path, f"unknown {family} ICMP type name {raw_type!r}")
                number = names[raw_type]
            else:
                number = (
                    int(raw_type) if isinstance(raw_type, str) else expect_int(raw_type, type_path)
                )
                if not 0 <= number <= 255:
                    raise PolicyError(type_path, f"{number} is out of range (0-255)")
            ports.append(PortRange(proto, number, number))
    return [PortRule(tuple(ports))] if ports else []


def _parse_peers(
    obj: Mapping[str, Any], path: str, direction: Direction, namespace: str
) -> Peers | None:
    """The rule's L3 peers; None when the rule names no L3 peer at all."""
    pre = "from" if direction is Direction.INGRESS else "to"
    selectors: list[Selector] = []
    cidrs: list[CidrPeer] = []
    entities: list[str] = []
    nodes: list[Selector] = []
    fqdns: list[str] = []
    named_any = False
    ep_key = f"{pre}Endpoints"
    for i, sel in enumerate(optional_list(obj, ep_key, path) or []):
        named_any = True
        selectors.append(
            _endpoint_selector(sel, index(field(path, ep_key), i), namespace, subject=False)
        )
    cidr_key = f"{pre}CIDR"
    for i, text in enumerate(optional_list(obj, cidr_key, path) or []):
        named_any = True
        item_path = index(field(path, cidr_key), i)
        cidrs.append(CidrPeer(parse_cidr(expect_str(text, item_path), item_path)))
    set_key = f"{pre}CIDRSet"
    for i, item in enumerate(optional_list(obj, set_key, path) or []):
        named_any = True
        item_path = index(field(path, set_key), i)
        cobj = expect_mapping(item, item_path)
        reject_unknown(cobj, {"cidr", "except", "cidrGroupRef", "cidrGroupSelector"}, item_path)
        if "cidr" not in cobj:
            raise PolicyError(field(item_path, "cidr"), "required (CIDR groups are not supported)")
        for group_key in ("cidrGroupRef", "cidrGroupSelector"):
            if group_key in cobj:  # not ignored beside a cidr: the policy would mean less
                raise PolicyError(field(item_path, group_key), "CIDR groups are not supported")
        excepts = [
            expect_str(e, index(field(item_path, "except"), k))
            for k, e in enumerate(expect_list(cobj.get("except") or [], field(item_path, "except")))
        ]
        cidrs.append(
            parse_cidr_peer(
                expect_str(cobj["cidr"], field(item_path, "cidr")),
                excepts,
                field(item_path, "cidr"),
                field(item_path, "except"),
            )
        )
    ent_key = f"{pre}Entities"
    for i, ent in enumerate(optional_list(obj, ent_key, path) or []):
        named_any = True
        item_path = index(field(path, ent_key), i)
        name = expect_str(ent, item_path)
        if name not in ENTITIES:
            raise PolicyError(
                item_path,
                f"unknown entity {name!r} (expected one of {', '.join(sorted(ENTITIES))})",
            )
        entities.append(name)
    node_key_name = f"{pre}Nodes"
    for i, sel in enumerate(optional_list(obj, node_key_name, path) or []):
        named_any = True
        item_path = index(field(path, node_key_name), i)
        nodes.append(Selector(parse_label_selector(sel, item_path, node_key), frozenset({"node"})))
    if direction is Direction.EGRESS:
        for i, item in enumerate(optional_list(obj, "toFQDNs", path) or []):
            named_any = True
            item_path = index(field(path, "toFQDNs"), i)
            fobj = expect_mapping(item, item_path)
            reject_unknown(fobj, {"matchName", "matchPattern"}, item_path)
            if ("matchName" in fobj) == ("matchPattern" in fobj):
                raise PolicyError(item_path, "exactly one of matchName or matchPattern is required")
            text = fobj.get("matchName") or fobj.get("matchPattern")
            if not text:
                raise PolicyError(item_path, "matchName or matchPattern must not be empty")
            fqdns.append(expect_str(text, item_path))
    if not named_any:
        return None
    if "all" in entities:
        return Peers(any_peer=True)
    return Peers(False, tuple(selectors), tuple(cidrs), tuple(entities), tuple(nodes), tuple(fqdns))


def _parse_section_rule(
    raw: Any, path: str, direction: Direction, action: Action, key: PolicyKey
) -> Rule:
    obj = expect_mapping(raw if raw is not None else {}, path)
    pre = "from" if direction is Direction.INGRESS else "to"
    known = {
        f"{pre}Endpoints",
        f"{pre}CIDR",
        f"{pre}CIDRSet",
        f"{pre}Entities",
        f"{pre}Nodes",
        f"{pre}Requires",
        f"{pre}Groups",
        "toPorts",
        "icmps",
        "authentication",
    }
    if direction is Direction.EGRESS:
        known |= {"toFQDNs", "toServices"}
    reject_unknown(obj, known, path)
    for name, reason in _UNSUPPORTED.items():
        if name in obj and obj[name]:
            raise PolicyError(field(path, name), reason)
    errors = ErrorCollector()
    peers: Peers | None = None
    port_rules: list[PortRule] = []
    with errors.checking():
        peers = _parse_peers(obj, path, direction, key.namespace)
    with errors.checking():
        to_ports = list(optional_list(obj, "toPorts", path) or [])
        port_rules += _parse_to_ports(to_ports, field(path, "toPorts"), direction, action)
    with errors.checking():
        icmps = list(optional_list(obj, "icmps", path) or [])
        port_rules += _parse_icmps(icmps, field(path, "icmps"))
    errors.raise_any()
    if peers is None:
        # No L3 field: an L4-only rule applies to every peer; an empty rule `{}` matches nothing.
        peers = Peers(any_peer=True) if port_rules else Peers()
    return Rule(
        RuleRef(key, path), direction, action, peers, tuple(port_rules) if port_rules else None
    )


def _check_host_l7(rule: Rule, path: str) -> None:
    """Host policies take L7 DNS rules but no HTTP rules (Cilium's host policy limit)."""
    for j, port_rule in enumerate(rule.ports or ()):
        if port_rule.l7.http:
            at = field(index(field(path, "toPorts"), j), "rules")
            raise PolicyError(field(at, "http"), "host policies (nodeSelector) allow no HTTP rules")


def _parse_spec(
    raw: Any, path: str, key: PolicyKey
) -> tuple[PolicyPart, str, tuple[tuple[str, str], ...]]:
    spec = expect_mapping(raw, path)
    reject_unknown(
        spec,
        {
            "endpointSelector",
            "nodeSelector",
            *list(_SECTIONS),
            "enableDefaultDeny",
            "description",
            "labels",
        },
        path,
    )
    has_ep = spec.get("endpointSelector") is not None
    has_node = spec.get("nodeSelector") is not None
    if has_ep == has_node:
        raise PolicyError(path, "exactly one of endpointSelector or nodeSelector is required")
    errors = ErrorCollector()
    subject = node_subject = None
    if has_ep:
        with errors.checking():
            subject = _endpoint_selector(
                spec["endpointSelector"], field(path, "endpointSelector"), key.namespace, True
            )
    else:
        if key.namespace:
            raise PolicyError(
                field(path, "nodeSelector"), "nodeSelector is only allowed in clusterwide policies"
            )
        with errors.checking():
            node_subject = Selector(
                parse_label_selector(spec["nodeSelector"], field(path, "nodeSelector"), node_key),
                frozenset({"node"}),
            )
    rules: list[Rule] = []
    has_rules = {Direction.INGRESS: False, Direction.EGRESS: False}
    for section, (direction, action) in _SECTIONS.items():
        items: Sequence[Any] = []
        with errors.checking():
            items = optional_list(spec, section, path) or []
        if items:
            has_rules[direction] = True
        for i, item in enumerate(items):
            rule_path = index(field(path, section), i)
            with errors.checking():
                rule = _parse_section_rule(item, rule_path, direction, action, key)
                if node_subject is not None:
                    _check_host_l7(rule, rule_path)
                rules.append(rule)
    isolates = {d for d, present in has_rules.items() if present}
    with errors.checking():
        _apply_default_deny(spec, path, isolates)
    description = ""
    with errors.checking():
        description = expect_str(spec.get("description", ""), field(path, "description"))
    labels: list[tuple[str, str]] = []
    with errors.checking():
        labels = _parse_spec_labels(spec, path)
    errors.raise_any()
    part = PolicyPart(subject, node_subject, frozenset(isolates), tuple(rules))
    return part, description, tuple(labels)


def _apply_default_deny(spec: Mapping[str, Any], path: str, isolates: set[Direction]) -> None:
    """`enableDefaultDeny` overrides, per direction, whether the subject is isolated."""
    default_deny = spec.get("enableDefaultDeny")
    if default_deny is not None:
        dd_path = field(path, "enableDefaultDeny")
        dd = expect_mapping(default_deny, dd_path)
        reject_unknown(dd, {"ingress", "egress"}, dd_path)
        for name, direction in (("ingress", Direction.INGRESS), ("egress", Direction.EGRESS)):
            if name in dd:
                if not isinstance(dd[name], bool):
                    raise PolicyError(field(dd_path, name), "expected true or false")
                if dd[name]:
                    isolates.add(direction)
                else:
                    isolates.discard(direction)


def _parse_spec_labels(spec: Mapping[str, Any], path: str) -> list[tuple[str, str]]:
    labels: list[tuple[str, str]] = []
    for i, item in enumerate(optional_list(spec, "labels", path) or []):
        item_path = index(field(path, "labels"), i)
        lobj = expect_mapping(item, item_path)
        labels.append(
            (expect_str(lobj.get("key", ""), field(item_path, "key")), str(lobj.get("value", "")))
        )
    return labels


def parse_septum_policy(obj: Mapping[str, Any], kind: Kind, namespace: str, name: str) -> Policy:
    key = PolicyKey(kind.value, namespace if kind is Kind.SEPTUM_POLICY else "", name)
    has_spec = obj.get("spec") is not None
    has_specs = obj.get("specs") is not None
    if not has_spec and not has_specs:
        raise PolicyError("spec", "spec or specs is required")
    parts: list[PolicyPart] = []
    descriptions: list[str] = []
    labels: list[tuple[str, str]] = []
    errors = ErrorCollector()
    raw_specs: list[tuple[Any, str]] = []
    if has_spec:
        raw_specs.append((obj["spec"], "spec"))
    if has_specs:
        raw_specs += [
            (raw, index("specs", i)) for i, raw in enumerate(expect_list(obj["specs"], "specs"))
        ]
    for raw, path in raw_specs:
        with errors.checking():
            part, desc, lab = _parse_spec(raw, path, key)
            parts.append(part)
            descriptions.append(desc)
            labels += lab
    errors.raise_any()
    return Policy(
        key, Tier.NORMAL, 0, tuple(parts), "; ".join(d for d in descriptions if d), tuple(labels)
    )
