"""Rule resolution: one named-port resolver for pods and host endpoints."""

from __future__ import annotations

from septum.operator.engine.ports import PROTO_TCP, PROTO_UDP, NamedPort, PortRange
from septum.operator.engine.resolution import resolve_named_ports, resolve_rule
from septum.operator.engine.rules import (
    Action,
    Direction,
    Peers,
    PolicyKey,
    PortRule,
    Rule,
    RuleRef,
    Tier,
)

TABLE = {"http": frozenset({(PROTO_TCP, 8080)}), "dns": frozenset({(PROTO_UDP, 53)})}


def _rule(direction: Direction, *ports: PortRange | NamedPort) -> Rule:
    ref = RuleRef(PolicyKey("SeptumNetworkPolicy", "x", "p"), "spec.ingress[0]")
    return Rule(ref, direction, Action.ALLOW, Peers(any_peer=True), (PortRule(tuple(ports)),))


def test_named_ports_resolve_by_name_and_protocol() -> None:
    assert resolve_named_ports([NamedPort("http")], TABLE) == (PortRange(PROTO_TCP, 8080, 8080),)
    assert resolve_named_ports([NamedPort("http", PROTO_UDP)], TABLE) == ()
    assert resolve_named_ports([NamedPort("missing")], TABLE) == ()


def test_ingress_named_port_is_the_subjects_port() -> None:
    rule = _rule(Direction.INGRESS, NamedPort("http"), PortRange(PROTO_TCP, 80, 80))
    [resolved] = resolve_rule(rule, 1, "any", Tier.NORMAL, frozenset({300}), TABLE, {}, ())
    assert resolved.ports == (PortRange(PROTO_TCP, 80, 80), PortRange(PROTO_TCP, 8080, 8080))


def test_a_host_subject_has_no_named_ports() -> None:
    rule = _rule(Direction.INGRESS, NamedPort("http"))
    [resolved] = resolve_rule(rule, 1, "any", Tier.NORMAL, None, {}, {}, ())
    assert resolved.ports == ()


def test_egress_named_port_splits_by_peer() -> None:
    rule = _rule(Direction.EGRESS, NamedPort("http"))
    peer_ports = {300: TABLE, 301: {"http": frozenset({(PROTO_TCP, 9000)})}, 302: {}}
    resolved = resolve_rule(rule, 1, "any", Tier.NORMAL, None, {}, peer_ports, [300, 301, 302])
    assert [(r.peers, r.ports) for r in resolved] == [
        (None, ()),
        (frozenset({300}), (PortRange(PROTO_TCP, 8080, 8080),)),
        (frozenset({301}), (PortRange(PROTO_TCP, 9000, 9000),)),
    ]
