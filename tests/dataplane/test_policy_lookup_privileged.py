"""Policy lookup precedence in the kernel, with and without the exact-key-first lookup
(SEPTUM_EP_POLICY_F_EXACT_FIRST_*, set for a direction whose policy has exact
(peer, protocol, port) entries): the same entries give the same verdict and the same
deciding rule either way."""

from __future__ import annotations

import itertools

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, TrafficDirection, Verdict
from septum.dataplane.events import decode_events
from septum.dataplane.packets import TCP_SYN, tcp4, udp4
from septum.dataplane.policy import EndpointPolicy, PolicyAction, PolicyEntry

from .conftest import TESTRUN_ENDPOINT, TESTRUN_IFINDEX, with_prefixes

pytestmark = pytest.mark.privileged

EGRESS = TrafficDirection.EGRESS
TCP, UDP = 6, 17
POD = "10.99.0.1"
PEERS = {"a": ("10.50.0.1", 600), "b": ("10.50.0.2", 601), "c": ("10.50.0.3", 602)}

L3_A = PolicyEntry(EGRESS, 600, rule_id=1)
RANGE_B = PolicyEntry(EGRESS, 601, TCP, 1024, end_port=2047, rule_id=3)  # one LPM prefix
PROTO_B = PolicyEntry(EGRESS, 601, UDP, rule_id=4)
ANY_PEER_443 = PolicyEntry(EGRESS, protocol=TCP, port=443, rule_id=5)
DENY_A_80 = PolicyEntry(EGRESS, 600, TCP, 80, action=PolicyAction.DENY, rule_id=2)
EXACT_A_8080 = PolicyEntry(EGRESS, 600, TCP, 8080, rule_id=6)

ALLOWED, DENIED = Verdict.FORWARDED, Verdict.DROPPED

# (peer, protocol, port) -> (verdict, deciding rule id or None for the default deny)
WITHOUT_EXACT = {
    ("a", TCP, 81): (ALLOWED, 1),
    ("b", TCP, 1500): (ALLOWED, 3),
    ("b", TCP, 1023): (DENIED, None),
    ("b", UDP, 53): (ALLOWED, 4),
    ("c", TCP, 22): (DENIED, None),
}
WITH_EXACT = {
    **WITHOUT_EXACT,
    ("a", TCP, 80): (DENIED, 2),
    ("a", TCP, 8080): (ALLOWED, 6),
    ("c", TCP, 443): (ALLOWED, 5),  # exact miss, no bucket: the any-peer bucket answers
    ("c", TCP, 444): (DENIED, None),
    ("b", TCP, 443): (ALLOWED, 5),  # b's bucket has no answer for 443
}


node = with_prefixes({f"{ip}/32": identity for ip, identity in PEERS.values()})


def _policy_flags(node) -> int:
    value = node.endpoints_map.lookup(abi.EndpointKey(ifindex=TESTRUN_IFINDEX))
    assert value is not None
    return int(value.policy_flags)


_source_ports = itertools.count(40000)


def _decide(node, peer: str, protocol: int, port: int) -> tuple[Verdict, int | None]:
    reader = node.flow_reader()
    reader.read_raw()
    ip = PEERS[peer][0]
    # a new source port every time: drop events are rate-limited per flow
    sport = next(_source_ports)
    packet = tcp4(POD, ip, sport, port, TCP_SYN) if protocol == TCP else udp4(POD, ip, sport, port)
    node.test_run(abi.PROG_FROM_POD, packet, ifindex=TESTRUN_IFINDEX)
    node.flush_conntrack()
    (event,) = decode_events(reader.read_raw())
    if event.verdict == DENIED:
        expected = DropReason.POLICY_DENY if event.rule_id else DropReason.POLICY_DENIED
        assert event.drop_reason == expected
    return Verdict(event.verdict), event.rule_id or None


@pytest.mark.parametrize(
    ("entries", "table", "exact_first"),
    [
        ((L3_A, RANGE_B, PROTO_B), WITHOUT_EXACT, False),
        ((L3_A, RANGE_B, PROTO_B, ANY_PEER_443, DENY_A_80, EXACT_A_8080), WITH_EXACT, True),
    ],
    ids=["head-first", "exact-first"],
)
def test_lookup_precedence(node, entries, table, exact_first):
    node.replace_policy(TESTRUN_ENDPOINT, EndpointPolicy(enforce_egress=True, entries=entries))
    flags = _policy_flags(node)
    assert bool(flags & abi.EP_POLICY_F_EXACT_FIRST_EGRESS) is exact_first
    assert not flags & abi.EP_POLICY_F_EXACT_FIRST_INGRESS
    got = {case: _decide(node, *case) for case in table}
    assert got == table


def test_the_flag_follows_the_policy(node):
    node.replace_policy(
        TESTRUN_ENDPOINT, EndpointPolicy(enforce_egress=True, entries=(EXACT_A_8080,))
    )
    assert _policy_flags(node) == abi.EP_POLICY_F_EXACT_FIRST_EGRESS
    node.replace_policy(TESTRUN_ENDPOINT, EndpointPolicy(enforce_egress=True, entries=(L3_A,)))
    assert _policy_flags(node) == 0
    assert _decide(node, "a", TCP, 8080) == (ALLOWED, 1)
