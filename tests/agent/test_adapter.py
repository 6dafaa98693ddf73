"""The adapter from the engine's entries to the datapath's: field by field, the peer fill,
and (against a Python model of bpf/lib/policy.h) the engine's lookup precedence."""

from __future__ import annotations

import pytest
from hypothesis import given

from septum.agent.adapter import (
    AdapterError,
    direction_entries,
    endpoint_policy,
    peer_fill,
    policy_to_write,
    translate_entry,
)
from septum.dataplane.abi import PolicyAction, TrafficDirection
from septum.dataplane.policy import EndpointPolicy as DatapathPolicy
from septum.dataplane.policy import PolicyEntry as DatapathEntry
from septum.dataplane.policy import encode
from septum.operator.engine.entries import (
    NOT_ENFORCED,
    DirectionPolicy,
    IdentityPolicy,
    PolicyEntry,
    Verdict,
)
from septum.operator.engine.rules import Direction, L7Kind

from .policies import (
    L7_PROXY_PORT,
    PROBE_PEERS,
    PROBES,
    directed_policies,
    engine_outcome,
    examples,
    identity_policy,
    model_outcome,
)

IN, OUT = Direction.INGRESS, Direction.EGRESS
ALLOW, DENY = Verdict.ALLOW, Verdict.DENY
TCP, UDP, ICMP = 6, 17, 1


def entry(peer, protocol, lo, hi, verdict=ALLOW, *, l7=False, audit=False, rule_id=1, to=IN):
    return PolicyEntry(to, peer, protocol, lo, hi, verdict, l7, audit, rule_id)


def only(engine_entry, l7_proxy_port=0):
    (translated,) = translate_entry(engine_entry, l7_proxy_port)
    return translated


def test_fields_map_one_to_one():
    got = only(entry(600, TCP, 80, 80, DENY, audit=True, rule_id=42, to=OUT))
    assert got == DatapathEntry(
        TrafficDirection.EGRESS,
        600,
        TCP,
        action=PolicyAction.DENY,
        audit=True,
        rule_id=42,
        port_range=(80, 80),
    )


def test_audit_is_kept_on_denies_only():
    assert not only(entry(600, TCP, 80, 80, ALLOW, audit=True)).audit


def test_l7_allows_redirect_to_the_proxy_port_given():
    l7_allow = entry(600, TCP, 80, 80, l7=True)
    assert only(l7_allow, 15001).l7_proxy_port == 15001
    assert only(l7_allow, 0).l7_proxy_port == 0  # no proxy yet: a plain allow
    assert only(entry(600, TCP, 80, 80), 15001).l7_proxy_port == 0


def test_dns_entries_go_to_the_dns_proxy_and_http_or_mixed_ones_to_the_http_proxy():
    def port(kind: L7Kind, dns_port: int | None = 15082, proxy_port: int = 15080) -> int:
        (got,) = translate_entry(entry(600, TCP, 53, 53, l7=kind, to=OUT), proxy_port, dns_port)
        return got.l7_proxy_port

    assert port(L7Kind.DNS) == 15082  # DNS over TCP reaches the DNS proxy
    assert port(L7Kind.HTTP) == 15080
    assert port(L7Kind.HTTP | L7Kind.DNS) == 15080
    assert port(L7Kind.NONE) == 0
    assert port(L7Kind.DNS, dns_port=None) == 15080  # no DNS port given: the direction's
    assert port(L7Kind.DNS, proxy_port=0) == 0  # no proxy yet: a plain allow


def test_udp_with_a_dns_kind_goes_to_the_dns_proxy():
    """The HTTP proxy has no UDP listener: a UDP entry whose kinds include DNS (http and dns
    rules met on one port) sent there was dropped (SOCKET_LOOKUP_FAILED)."""

    def port(kind: L7Kind, protocol: int) -> int:
        (got,) = translate_entry(entry(600, protocol, 53, 53, l7=kind, to=OUT), 15080, 15082)
        return got.l7_proxy_port

    assert port(L7Kind.HTTP | L7Kind.DNS, UDP) == 15082
    assert port(L7Kind.DNS, UDP) == 15082
    assert port(L7Kind.HTTP | L7Kind.DNS, TCP) == 15080  # TCP: the HTTP proxy, as before


@pytest.mark.parametrize(
    ("lo", "hi", "icmp_type", "port_range"),
    [
        (0, 0, 0, None),  # echo reply, not "any type"
        (8, 8, 8, None),
        (0, 65535, None, None),  # every type
        (0, 255, None, None),
        (9, 65535, None, (9, 255)),
        (1, 7, None, (1, 7)),
        (255, 65535, 255, None),
    ],
)
def test_icmp_types(lo, hi, icmp_type, port_range):
    got = only(entry(600, ICMP, lo, hi))
    assert (got.port, got.end_port, got.icmp_type, got.port_range) == (0, 0, icmp_type, port_range)


def test_icmp_segments_beyond_the_last_type_are_left_out():
    assert translate_entry(entry(600, ICMP, 256, 65535)) == []


@pytest.mark.parametrize(
    ("lo", "hi", "port_range"),
    [(0, 65535, None), (0, 0, (0, 0)), (80, 80, (80, 80)), (1, 1023, (1, 1023))],
)
def test_ports(lo, hi, port_range):
    got = only(entry(600, TCP, lo, hi))
    assert (got.port, got.end_port, got.port_range) == (0, 0, port_range)


def test_an_any_protocol_entry_with_ports_is_refused():
    with pytest.raises(AdapterError, match="ingress peer 600: an any-protocol entry has ports"):
        translate_entry(entry(600, 0, 80, 80))


def _direction(*entries, protocols=(TCP,)):
    return DirectionPolicy(True, tuple(sorted(entries)), protocols)


WILDCARD = (
    entry(0, TCP, 0, 79, DENY, rule_id=1),
    entry(0, TCP, 80, 80, ALLOW, rule_id=2),
    entry(0, TCP, 81, 65535, DENY, rule_id=1),
    entry(0, 0, 0, 65535, DENY, rule_id=1),
)


def test_a_peer_with_an_any_protocol_entry_gets_the_wildcard_in_its_gaps():
    own = (entry(600, TCP, 70, 90, ALLOW, rule_id=5), entry(600, 0, 0, 65535, ALLOW, rule_id=5))
    fill = peer_fill(600, own, WILDCARD, (TCP,))
    assert sorted(fill) == [
        entry(600, TCP, 0, 69, DENY, rule_id=1),
        entry(600, TCP, 91, 65535, DENY, rule_id=1),
    ]


def test_only_peers_with_an_any_protocol_entry_are_filled():
    with_head = _direction(*WILDCARD, entry(600, 0, 0, 65535, ALLOW, rule_id=5))
    without = _direction(*WILDCARD, entry(601, TCP, 81, 90, ALLOW, rule_id=6))
    assert len(direction_entries(with_head)) == len(WILDCARD) + 1 + 3
    assert len(direction_entries(without)) == len(WILDCARD) + 1


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (WILDCARD[:3], "peer 0: 0 any-protocol entries, expected 1"),
        (WILDCARD[1:], "peer 0: protocol 6 is listed but not covered"),
    ],
)
def test_incomplete_wildcards_are_refused(entries, message):
    with pytest.raises(AdapterError, match=message):
        direction_entries(_direction(*entries))


def test_endpoint_policy_is_resolved_and_enforces_what_the_engine_does():
    policy = endpoint_policy(IdentityPolicy(_direction(*WILDCARD), NOT_ENFORCED))
    assert policy.resolved
    assert (policy.enforce_ingress, policy.enforce_egress) == (True, False)
    assert {e.direction for e in policy.entries} == {TrafficDirection.INGRESS}
    encode(policy)  # the datapath takes it: no overlaps


def test_policy_to_write():
    old = endpoint_policy(IdentityPolicy(_direction(*WILDCARD), NOT_ENFORCED))
    same = endpoint_policy(IdentityPolicy(_direction(*WILDCARD), NOT_ENFORCED))
    assert policy_to_write(old, same) is None
    assert policy_to_write(None, same) is same
    assert policy_to_write(DatapathPolicy(), same) is same
    unresolved = DatapathPolicy(old.enforce_ingress, old.enforce_egress, old.entries)
    assert policy_to_write(unresolved, same) is same


# The hand-written cases where a naive translation goes wrong (also run in the kernel by
# test_adapter_precedence_privileged.py).
SPECIFIC_ALLOW_OVER_WILDCARD_DENY = _direction(*WILDCARD, entry(600, TCP, 22, 22, ALLOW, rule_id=7))
WILDCARD_PROTOCOL_BEATS_PEER_ANY_PROTOCOL = _direction(
    *WILDCARD, entry(600, 0, 0, 65535, DENY, rule_id=8), entry(601, 0, 0, 65535, ALLOW, rule_id=9)
)
ICMP_TYPE_ZERO = _direction(
    entry(0, ICMP, 0, 0, ALLOW, rule_id=3),
    entry(0, ICMP, 1, 65535, DENY, rule_id=1),
    entry(0, 0, 0, 65535, DENY, rule_id=1),
    protocols=(ICMP,),
)
HAND_WRITTEN = {
    "specific-allow-over-wildcard-deny": SPECIFIC_ALLOW_OVER_WILDCARD_DENY,
    "wildcard-protocol-beats-peer-any-protocol": WILDCARD_PROTOCOL_BEATS_PEER_ANY_PROTOCOL,
    "icmp-type-zero": ICMP_TYPE_ZERO,
}


def _disagreements(policy: DirectionPolicy, direction: Direction) -> list[tuple]:
    written = endpoint_policy(identity_policy(direction, policy), L7_PROXY_PORT)
    encoded = encode(written)
    dp_direction = TrafficDirection.INGRESS if direction is IN else TrafficDirection.EGRESS
    enforced = policy.enforced
    wrong = []
    for peer in (*PROBE_PEERS, 0):
        for protocol, port in PROBES:
            want = engine_outcome(policy, peer, protocol, port, L7_PROXY_PORT)
            got = model_outcome(encoded, enforced, dp_direction, peer, protocol, port)
            if got != want:
                wrong.append((peer, protocol, port, want, got))
    return wrong


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_cases_against_the_model(name):
    assert _disagreements(HAND_WRITTEN[name], IN) == []


def test_the_hand_written_cases_need_the_resolved_mode():
    policy = SPECIFIC_ALLOW_OVER_WILDCARD_DENY
    written = endpoint_policy(IdentityPolicy(policy, NOT_ENFORCED))
    default = encode(DatapathPolicy(True, False, written.entries))  # deny-beats-allow
    got = model_outcome(default, True, TrafficDirection.INGRESS, 600, TCP, 22)
    assert got != engine_outcome(policy, 600, TCP, 22, 0)


@examples(300)
@given(directed_policies)
def test_the_datapath_model_decides_as_the_engine(case):
    direction, policy = case
    assert _disagreements(policy, direction) == []


def test_a_proxy_port_per_direction() -> None:
    def side(to):
        wildcard = tuple(e._replace(direction=to) for e in WILDCARD)
        return _direction(*wildcard, entry(600, TCP, 80, 80, l7=True, rule_id=9, to=to))

    policy = IdentityPolicy(side(IN), side(OUT))
    ports = {
        (e.direction, e.peer_identity): e.l7_proxy_port
        for e in endpoint_policy(policy, 15080, 15081).entries
        if e.l7_proxy_port
    }
    assert ports == {
        (TrafficDirection.INGRESS, 600): 15081,
        (TrafficDirection.EGRESS, 600): 15080,
    }
