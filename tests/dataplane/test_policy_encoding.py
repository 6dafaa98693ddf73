"""Encoding policy entries into map entries: buckets, ranges, deny-beats-allow, errors."""

from __future__ import annotations

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import MatchType, PolicyAction, TrafficDirection
from septum.dataplane.errors import PolicyEntryError
from septum.dataplane.policy import (
    EndpointPolicy,
    PolicyEntry,
    _port_blocks,
    diff_policy,
    encode,
)

IN, OUT = TrafficDirection.INGRESS, TrafficDirection.EGRESS
DENY = PolicyAction.DENY


def covered_ports(blocks):
    ports = set()
    for value, plen in blocks:
        size = 1 << (16 - plen)
        ports |= set(range(value, value + size))
    return ports


@pytest.mark.parametrize(
    ("first", "last"), [(80, 90), (1, 65535), (0, 65535), (1024, 2047), (7, 7)]
)
def test_port_blocks_cover_exactly_the_range(first, last):
    blocks = _port_blocks(first, last)
    assert covered_ports(blocks) == set(range(first, last + 1))
    assert sum(1 << (16 - plen) for _, plen in blocks) == last - first + 1


def test_bucket_heads_exact_ranges_and_match_types():
    encoded = encode(
        EndpointPolicy.selecting(
            [
                PolicyEntry(IN, 100, 6, 80, rule_id=1),
                PolicyEntry(IN, 100, 6, 8000, 8003, rule_id=2),
                PolicyEntry(IN, 0, 17, 0, rule_id=3),
                PolicyEntry(IN, 200, rule_id=4),
            ]
        )
    )
    hashes = encoded.hash_entries
    assert hashes[(IN, 100, 6, 80)].match_type == MatchType.L3_L4
    assert hashes[(IN, 100, 0, 0)].action == PolicyAction.NONE
    assert hashes[(IN, 0, 17, 0)].match_type == MatchType.L4_ONLY
    assert hashes[(IN, 200, 0, 0)].match_type == MatchType.L3_ONLY
    assert hashes[(IN, 200, 0, 0)].action == PolicyAction.ALLOW
    assert set(encoded.range_entries) == {(IN, 100, 6, 8000, 14)}
    keys, values = encoded.policy_items(endpoint_id=9, generation=1)
    heads = {
        (k.direction, k.peer_identity): v.flags
        for k, v in zip(keys, values, strict=True)
        if not k.protocol
    }
    assert heads[(IN, 100)] == abi.POLICY_F_HAS_EXACT | abi.POLICY_F_HAS_RANGE
    assert heads[(IN, 0)] == abi.POLICY_F_HAS_PROTO
    assert all(k.endpoint_id == 9 and k.generation == 1 for k in keys)


def test_port_without_protocol_means_tcp_udp_sctp():
    encoded = encode(EndpointPolicy.selecting([PolicyEntry(OUT, 0, 0, 53)]))
    assert {k[2] for k in encoded.hash_entries if k[3] == 53} == {6, 17, 132}


def test_wider_deny_overrides_narrower_allow_in_the_same_bucket():
    encoded = encode(
        EndpointPolicy.selecting(
            [
                PolicyEntry(IN, 100, 6, 80, rule_id=1),
                PolicyEntry(IN, 100, 6, 0, action=DENY, rule_id=2),
            ]
        )
    )
    assert encoded.hash_entries[(IN, 100, 6, 80)].action == DENY
    assert encoded.hash_entries[(IN, 100, 6, 80)].rule_id == 2


def test_any_peer_deny_is_copied_into_peer_buckets():
    encoded = encode(
        EndpointPolicy.selecting(
            [
                PolicyEntry(IN, 100, rule_id=1),  # L3 allow
                PolicyEntry(IN, 0, 6, 22, action=DENY, rule_id=2),
            ]
        )
    )
    assert encoded.hash_entries[(IN, 100, 6, 22)].action == DENY
    assert encoded.hash_entries[(IN, 100, 0, 0)].action == PolicyAction.ALLOW


def test_range_allow_under_a_wider_range_deny():
    encoded = encode(
        EndpointPolicy.selecting(
            [
                PolicyEntry(IN, 0, 6, 8080, rule_id=1),
                PolicyEntry(IN, 0, 6, 8000, 8191, action=DENY, rule_id=2),
            ]
        )
    )
    assert encoded.hash_entries[(IN, 0, 6, 8080)].action == DENY


def test_audit_deny_loses_to_a_real_deny():
    encoded = encode(
        EndpointPolicy.selecting(
            [
                PolicyEntry(IN, 5, action=DENY, audit=True, rule_id=1),
                PolicyEntry(IN, 5, action=DENY, rule_id=2),
            ]
        )
    )
    head = encoded.hash_entries[(IN, 5, 0, 0)]
    assert (head.action, head.audit, head.rule_id) == (DENY, False, 2)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (PolicyEntry(TrafficDirection.UNKNOWN), r"entries\[0\]\.direction"),
        (PolicyEntry(IN, protocol=300), r"entries\[0\]\.protocol"),
        (PolicyEntry(IN, protocol=6, port=70000), r"entries\[0\]\.port"),
        (PolicyEntry(IN, protocol=6, port=90, end_port=80), r"entries\[0\]\.end_port"),
        (PolicyEntry(IN, protocol=1, port=8, end_port=9), r"entries\[0\]\.end_port"),
        (PolicyEntry(IN, action=DENY, l7_proxy_port=1), r"entries\[0\]\.l7_proxy_port"),
        (PolicyEntry(IN, peer_identity=-1), r"entries\[0\]\.peer_identity"),
        (PolicyEntry(IN, peer_identity="5"), r"entries\[0\]\.peer_identity: '5' is not an"),
        (PolicyEntry(IN, protocol=6, port=80.5), r"entries\[0\]\.port: 80\.5 is not an integer"),
        (PolicyEntry(IN, rule_id=True), r"entries\[0\]\.rule_id: True is not an integer"),
        (PolicyEntry(IN, protocol=6, icmp_type=0), r"entries\[0\]\.icmp_type: only ICMP"),
        (PolicyEntry(IN, protocol=1, icmp_type=256), r"entries\[0\]\.icmp_type: 256 out of"),
        (PolicyEntry(IN, protocol=1, port=8, icmp_type=8), r"entries\[0\]\.port: give the"),
        (PolicyEntry(IN, protocol=6, port_range=(9, 8)), r"entries\[0\]\.port_range: 9\.\.8"),
        (PolicyEntry(IN, protocol=1, port_range=(0, 256)), r"entries\[0\]\.port_range: 0\.\."),
        (PolicyEntry(IN, port_range=(0, 0)), r"entries\[0\]\.port_range: give a protocol"),
        (PolicyEntry(IN, protocol=6, port=1, port_range=(0, 0)), r"port_range: give the"),
        (PolicyEntry(IN, protocol=6, port_range=(0, "1")), r"port_range: \(0, '1'\) is not"),
    ],
)
def test_invalid_entries_name_the_field(entry, message):
    with pytest.raises(PolicyEntryError, match=message):
        encode(EndpointPolicy.selecting([entry]))


def test_diff():
    a = PolicyEntry(IN, 1, rule_id=1)
    b = PolicyEntry(IN, 2, rule_id=2)
    change = diff_policy(EndpointPolicy.selecting([a]), EndpointPolicy.selecting([b]))
    assert (change.added, change.removed, change.enforcement_changed) == (
        frozenset({b}),
        frozenset({a}),
        False,
    )
    assert diff_policy(EndpointPolicy(), EndpointPolicy()).empty


def test_a_switch_to_resolved_mode_is_a_change():
    entries = (PolicyEntry(IN, 1, rule_id=1),)
    before = EndpointPolicy(enforce_ingress=True, entries=entries)
    after = EndpointPolicy(enforce_ingress=True, entries=entries, resolved=True)
    change = diff_policy(before, after)
    assert change.resolved_changed and not change.empty


def _bucket(encoded, direction, peer):
    """{(protocol, port or (port, prefix length)): (action, rule id)} of one bucket."""
    found = {
        (protocol, port): (value.action, value.rule_id)
        for (d, p, protocol, port), value in encoded.hash_entries.items()
        if (d, p) == (direction, peer)
    }
    found |= {
        (protocol, (port, plen)): (value.action, value.rule_id)
        for (d, p, protocol, port, plen), value in encoded.range_entries.items()
        if (d, p) == (direction, peer)
    }
    return found


def test_resolved_entries_are_written_as_given():
    entries = (
        PolicyEntry(IN, 0, 6, 22, action=DENY, rule_id=1),
        PolicyEntry(IN, 0, action=DENY, rule_id=2),
        PolicyEntry(IN, 100, 6, 22, rule_id=3),  # an allow over an any-peer deny
        PolicyEntry(IN, 100, 6, port_range=(1, 21), action=DENY, rule_id=4),
    )
    encoded = encode(EndpointPolicy(enforce_ingress=True, entries=entries, resolved=True))
    deny_1_21 = {(6, 1)} | {(6, block) for block in ((2, 15), (4, 14), (8, 13), (16, 14), (20, 15))}
    assert _bucket(encoded, IN, 100) == {
        (0, 0): (PolicyAction.NONE, 0),
        (6, 22): (PolicyAction.ALLOW, 3),
    } | dict.fromkeys(deny_1_21, (DENY, 4))
    # the default encoding copies the deny in and lets it win
    default = encode(EndpointPolicy(enforce_ingress=True, entries=entries))
    assert _bucket(default, IN, 100)[(6, 22)] == (DENY, 1)


def test_port_zero_alone_is_a_range_key_not_any_port():
    entry = PolicyEntry(IN, 100, 6, port_range=(0, 0), rule_id=1)
    for resolved in (False, True):
        encoded = encode(EndpointPolicy(enforce_ingress=True, entries=(entry,), resolved=resolved))
        assert (IN, 100, 6, 0) not in encoded.hash_entries
        assert set(encoded.range_entries) == {(IN, 100, 6, 0, 16)}


def test_full_port_range_is_the_protocol_key():
    entry = PolicyEntry(IN, 100, 6, port_range=(0, 65535), rule_id=1)
    encoded = encode(EndpointPolicy(enforce_ingress=True, entries=(entry,), resolved=True))
    assert (IN, 100, 6, 0) in encoded.hash_entries and not encoded.range_entries


def test_icmp_type_ranges_are_prefixes_of_typed_keys():
    entry = PolicyEntry(IN, 100, 1, port_range=(0, 7), rule_id=1)
    encoded = encode(EndpointPolicy(enforce_ingress=True, entries=(entry,), resolved=True))
    assert set(encoded.range_entries) == {(IN, 100, 1, abi.POLICY_ICMP_TYPE, 13)}
    entry = PolicyEntry(IN, 100, 1, port_range=(9, 255), rule_id=1)
    encoded = encode(EndpointPolicy(enforce_ingress=True, entries=(entry,), resolved=True))
    keys = [(port - abi.POLICY_ICMP_TYPE, plen) for (*_, port, plen) in encoded.range_entries]
    assert covered_ports(keys) == set(range(10, 256))
    assert (IN, 100, 1, abi.POLICY_ICMP_TYPE | 9) in encoded.hash_entries  # a block of one


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            (PolicyEntry(IN, 7, 6, 80), PolicyEntry(IN, 7, 6, port_range=(1, 100))),
            r"entries\[1\]: overlaps entries\[0\] \(ingress, peer 7, protocol 6\)",
        ),
        (
            (PolicyEntry(IN, 7, 6, 80), PolicyEntry(IN, 7, 0, 80)),  # a port: TCP, UDP, SCTP
            r"entries\[1\]: overlaps entries\[0\] \(ingress, peer 7, protocol 6\)",
        ),
        (
            (PolicyEntry(OUT, 0), PolicyEntry(OUT, 0, 17), PolicyEntry(OUT, 0, action=DENY)),
            r"entries\[2\]: overlaps entries\[0\] \(egress, peer 0, protocol 0\)",
        ),
        (
            (PolicyEntry(IN, 7, 1, icmp_type=0), PolicyEntry(IN, 7, 1, port_range=(0, 3))),
            r"entries\[1\]: overlaps entries\[0\] \(ingress, peer 7, protocol 1\)",
        ),
        (
            (PolicyEntry(IN, 7, 1, icmp_type=8), PolicyEntry(IN, 7, 1)),
            r"entries\[1\]: overlaps entries\[0\]",
        ),
    ],
    ids=["ranges", "port-without-protocol", "heads", "icmp-types", "every-icmp-type"],
)
def test_resolved_mode_refuses_overlaps(entries, message):
    with pytest.raises(PolicyEntryError, match=message):
        encode(
            EndpointPolicy(
                enforce_ingress=True, enforce_egress=True, entries=entries, resolved=True
            )
        )
    encode(EndpointPolicy(enforce_ingress=True, enforce_egress=True, entries=entries))


def test_resolved_mode_takes_disjoint_neighbours():
    entries = (
        PolicyEntry(IN, 7, 6, port_range=(0, 79)),
        PolicyEntry(IN, 7, 6, 80, action=DENY),
        PolicyEntry(IN, 7, 6, port_range=(81, 65535)),
        PolicyEntry(IN, 8, 6, 80),  # another peer
        PolicyEntry(IN, 7, 17, 80),  # another protocol
        PolicyEntry(IN, 7),  # the head
    )
    encode(EndpointPolicy(enforce_ingress=True, entries=entries, resolved=True))
