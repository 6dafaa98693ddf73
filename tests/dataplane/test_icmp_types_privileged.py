"""ICMP policy entries name types: type 0 (IPv4 echo reply) is a type of its own, not
"any type" -- which an entry without a type still means."""

from __future__ import annotations

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, TrafficDirection
from septum.dataplane.packets import ETH_P_IPV6, ether, icmp, ipv4, ipv6
from septum.dataplane.policy import EndpointPolicy, PolicyEntry

from .conftest import FORWARDED, POD_IP, POD_IP6, TESTRUN_ENDPOINT, dropped, with_prefixes

pytestmark = pytest.mark.privileged

PEER, PEER6, PEER_ID = "10.94.0.2", "fd00:94::2", 940
INGRESS = TrafficDirection.INGRESS
DENIED = dropped(DropReason.POLICY_DENIED)


node = with_prefixes({f"{PEER}/32": PEER_ID, f"{PEER6}/128": PEER_ID})


def _in4(kind: int, ident: int) -> bytes:
    return ether(ipv4(PEER, POD_IP, 1, icmp(kind, ident=ident)))


def _in6(kind: int, ident: int) -> bytes:
    return ether(ipv6(PEER6, POD_IP6, 58, icmp(kind, ident=ident)), ETH_P_IPV6)


def _allow(*entries: PolicyEntry) -> EndpointPolicy:
    return EndpointPolicy(enforce_ingress=True, entries=entries)


def test_type_zero_is_one_type(node, runner):
    node.replace_policy(TESTRUN_ENDPOINT, _allow(PolicyEntry(INGRESS, PEER_ID, 1, icmp_type=0)))
    to_pod = abi.PROG_TO_POD
    assert runner.outcome(_in4(0, 1), to_pod) == FORWARDED  # echo reply
    assert runner.outcome(_in4(8, 2), to_pod) == DENIED  # echo request
    assert runner.outcome(_in4(5, 3), to_pod) == DENIED  # redirect


def test_a_type_given_as_port_and_as_icmp_type_agree(node, runner):
    for entry in (
        PolicyEntry(INGRESS, PEER_ID, 58, 128),
        PolicyEntry(INGRESS, PEER_ID, 58, icmp_type=128),
    ):
        node.replace_policy(TESTRUN_ENDPOINT, _allow(entry))
        node.flush_conntrack()
        assert runner.outcome(_in6(128, 4), abi.PROG_TO_POD) == FORWARDED
        assert runner.outcome(_in6(137, 5), abi.PROG_TO_POD) == DENIED  # a routed redirect


def test_an_entry_without_a_type_allows_every_type(node, runner):
    node.replace_policy(TESTRUN_ENDPOINT, _allow(PolicyEntry(INGRESS, PEER_ID, 1)))
    for kind in (0, 5, 8, 13):
        assert runner.outcome(_in4(kind, 10 + kind), abi.PROG_TO_POD) == FORWARDED
