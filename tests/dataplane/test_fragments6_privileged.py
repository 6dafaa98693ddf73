"""IPv6 fragments whose datagram has extension headers after the Fragment header
(Fragment -> Destination Options -> UDP): later fragments see only the Fragment header's
next header, the first fragment sees the L4 protocol; both must meet the same fragment
record, and so the first fragment's conntrack entry and verdict (bpf/lib/fragments.h)."""

from __future__ import annotations

import pytest

from septum.dataplane.abi import DropReason, IPVersion, TrafficDirection
from septum.dataplane.packets import ETH_P_IPV6, ether, ipv6, ipv6_extensions, ipv6_fragment, udp
from septum.dataplane.policy import EndpointPolicy, PolicyEntry

from .conftest import FORWARDED, POD_IP6, TESTRUN_ENDPOINT, dropped

pytestmark = pytest.mark.privileged

PEER6 = "fd00:99::2"
UDP, FRAGMENT, DEST_OPTIONS, ROUTING = 17, 44, 60, 43


def first_fragment(ident: int, sport: int, dport: int, options: list[tuple[int, int]]) -> bytes:
    after_fragment, chain = ipv6_extensions(options, UDP)
    body = ipv6_fragment(after_fragment, 0, True, ident) + chain + udp(sport, dport, bytes(16))
    return ether(ipv6(POD_IP6, PEER6, FRAGMENT, body), ETH_P_IPV6)


def later_fragment(ident: int, options: list[tuple[int, int]]) -> bytes:
    after_fragment = options[0][0] if options else UDP
    body = ipv6_fragment(after_fragment, 8, False, ident) + bytes(24)
    return ether(ipv6(POD_IP6, PEER6, FRAGMENT, body), ETH_P_IPV6)


CHAINS = {
    "none": [],
    "dest-options": [(DEST_OPTIONS, 0)],
    "dest-options-routing": [(DEST_OPTIONS, 1), (ROUTING, 0)],
}


def udp6_entries(node) -> list:
    return [
        entry
        for key, entry in node.conntrack()
        if key.ip_version == IPVersion.V6 and key.protocol == UDP
    ]


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_later_fragments_meet_the_first_fragments_connection(runner, testrun_node, chain):
    options = CHAINS[chain]
    assert runner.outcome(first_fragment(101, 40000, 53, options)) == FORWARDED
    assert runner.outcome(later_fragment(101, options)) == FORWARDED
    assert runner.outcome(later_fragment(101, options)) == FORWARDED
    (entry,) = udp6_entries(testrun_node)  # one connection, under the L4 protocol
    assert entry.fwd_packets == 2  # the later ones: the first is counted in its event
    assert len(testrun_node.conntrack()) == 1


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_later_fragments_get_the_first_fragments_verdict(runner, testrun_node, chain):
    options = CHAINS[chain]
    allow_dns = PolicyEntry(TrafficDirection.EGRESS, protocol=UDP, port=53, rule_id=1)
    testrun_node.replace_policy(
        TESTRUN_ENDPOINT, EndpointPolicy(enforce_egress=True, entries=(allow_dns,))
    )
    assert runner.outcome(first_fragment(102, 40001, 53, options)) == FORWARDED
    assert runner.outcome(later_fragment(102, options)) == FORWARDED
    denied = dropped(DropReason.POLICY_DENIED)
    assert runner.outcome(first_fragment(103, 40002, 5353, options)) == denied
    assert runner.outcome(later_fragment(103, options)) == denied


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_an_orphan_later_fragment_still_drops(runner, chain):
    options = CHAINS[chain]
    assert runner.outcome(later_fragment(104, options)) == dropped(DropReason.FRAG_NOT_FOUND)


def test_another_datagrams_id_does_not_match(runner):
    options = CHAINS["dest-options"]
    assert runner.outcome(first_fragment(105, 40003, 53, options)) == FORWARDED
    assert runner.outcome(later_fragment(106, options)) == dropped(DropReason.FRAG_NOT_FOUND)
