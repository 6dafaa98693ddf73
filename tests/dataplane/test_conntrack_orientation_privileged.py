"""Which packets belong to a tracked connection, and how their drops are reported: an ICMP
echo request is never the reply of the pod's own ping, other ICMP messages are decided by
policy one by one (their type is not in the conntrack key), and a dropped reply of a
revoked connection is reported in the connection's direction, as a reply."""

from __future__ import annotations

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, TrafficDirection
from septum.dataplane.events import decode_events
from septum.dataplane.packets import TCP_ACK, TCP_SYN, ether, icmp, ipv4, tcp4
from septum.dataplane.policy import EndpointPolicy, PolicyEntry

from .conftest import FORWARDED, POD_IP, TESTRUN_ENDPOINT, dropped, with_prefixes

pytestmark = pytest.mark.privileged

PEER, PEER_ID = "10.97.0.2", 970
DENIED = dropped(DropReason.POLICY_DENIED)
EGRESS, INGRESS = TrafficDirection.EGRESS, TrafficDirection.INGRESS


node = with_prefixes({f"{PEER}/32": PEER_ID})


@pytest.fixture
def revoking(node):
    node.set_revoke_on_policy_change(True)
    try:
        yield node
    finally:
        node.set_revoke_on_policy_change(False)


def _icmp(src: str, dst: str, kind: int, ident: int = 7) -> bytes:
    return ether(ipv4(src, dst, 1, icmp(kind, ident=ident)))


def test_a_peer_request_does_not_ride_the_pods_ping(node, runner):
    node.replace_policy(TESTRUN_ENDPOINT, EndpointPolicy(enforce_ingress=True))
    assert runner.outcome(_icmp(POD_IP, PEER, 8, ident=7)) == FORWARDED  # the pod pings
    assert runner.outcome(_icmp(PEER, POD_IP, 0, ident=7), abi.PROG_TO_POD) == FORWARDED
    # the peer's own request with the same identifier is a new ping, and ingress denies it
    assert runner.outcome(_icmp(PEER, POD_IP, 8, ident=7), abi.PROG_TO_POD) == DENIED


def test_other_icmp_messages_are_decided_one_by_one(node, runner):
    timestamp = PolicyEntry(EGRESS, PEER_ID, 1, 13)  # ICMP type 13 (timestamp) allowed out
    node.replace_policy(
        TESTRUN_ENDPOINT,
        EndpointPolicy(enforce_ingress=True, enforce_egress=True, entries=(timestamp,)),
    )
    assert runner.outcome(_icmp(POD_IP, PEER, 13)) == FORWARDED
    # neither a redirect from the peer nor another type from the pod rides that packet
    assert runner.outcome(_icmp(PEER, POD_IP, 5), abi.PROG_TO_POD) == DENIED
    assert runner.outcome(_icmp(POD_IP, PEER, 17)) == DENIED
    assert runner.outcome(_icmp(POD_IP, PEER, 13)) == FORWARDED
    assert [k for k, _ in node.conntrack() if k.protocol == 1] == []


def test_a_dropped_reply_of_a_revoked_connection_is_reported_as_a_reply(revoking, runner):
    node = revoking
    allow = PolicyEntry(EGRESS, PEER_ID, 6, 443)
    node.replace_policy(TESTRUN_ENDPOINT, EndpointPolicy.selecting([allow]))
    assert runner.outcome(tcp4(POD_IP, PEER, 40400, 443, TCP_SYN)) == FORWARDED
    node.replace_policy(TESTRUN_ENDPOINT, EndpointPolicy(enforce_egress=True))  # revoked
    reader = node.flow_reader()
    reader.read_raw()
    reply = tcp4(PEER, POD_IP, 443, 40400, TCP_SYN | TCP_ACK)
    assert runner.outcome(reply, abi.PROG_TO_POD) == DENIED
    [event] = decode_events(reader.read_raw())
    assert (event.direction, event.is_reply) == (EGRESS, True)
    assert (event.src_ip, event.dst_ip) == (PEER, POD_IP)
    assert event.drop_reason == DropReason.POLICY_DENIED
