"""ICMP errors about a tracked connection are part of it ("related", as in Cilium): a
router's fragmentation-needed or packet-too-big for an allowed flow and a port unreachable
answering an allowed query pass an ingress policy that allows nothing, reported as
RELATED; errors quoting an unknown, revoked or other-direction flow are decided by policy
like any new ICMP packet."""

from __future__ import annotations

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, TrafficDirection, Verdict
from septum.dataplane.events import decode_events
from septum.dataplane.observe import record
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.metadata import StaticMetadata
from septum.dataplane.packets import (
    ETH_P_IPV6,
    TCP_ACK,
    TCP_SYN,
    ether,
    icmp,
    ipv4,
    ipv6,
    tcp,
    udp,
)
from septum.dataplane.policy import EndpointPolicy

from .conftest import FORWARDED, POD_IP, POD_IP6, dropped

pytestmark = pytest.mark.privileged

PEER, PEER6 = "10.98.0.2", "fd00:98::2"
ROUTER, ROUTER6 = "10.98.0.254", "fd00:98::fe"
DENIED = dropped(DropReason.POLICY_DENIED)


def _error4(src: str, kind: int, code: int, quoted: bytes) -> bytes:
    """An ICMP error from `src` to the pod quoting `quoted` (an IPv4 packet)."""
    return ether(ipv4(src, POD_IP, 1, bytes([kind, code, 0, 0, 0, 0, 0x05, 0xDC]) + quoted))


def _error6(src: str, kind: int, quoted: bytes) -> bytes:
    return ether(
        ipv6(src, POD_IP6, 58, bytes([kind, 0, 0, 0, 0, 0, 0x05, 0x00]) + quoted), ETH_P_IPV6
    )


@pytest.fixture
def node(testrun_node):
    # egress open, ingress enforced with nothing allowed: only related errors come in
    testrun_node.replace_policy(11, EndpointPolicy(enforce_ingress=True))
    testrun_node.flow_reader().read_raw()
    return testrun_node


def test_port_unreachable_for_an_allowed_udp_query(node, runner):
    query = ipv4(POD_IP, PEER, 17, udp(40300, 53))
    assert runner.outcome(ether(query)) == FORWARDED
    assert runner.outcome(_error4(PEER, 3, 3, query), abi.PROG_TO_POD) == FORWARDED
    # the same error about a query nobody sent is a new ICMP packet, denied
    other = ipv4(POD_IP, PEER, 17, udp(40301, 53))
    assert runner.outcome(_error4(PEER, 3, 3, other), abi.PROG_TO_POD) == DENIED


def test_fragmentation_needed_from_a_router_and_its_event(node, runner):
    segment = ipv4(POD_IP, PEER, 6, tcp(40302, 443, TCP_SYN))
    assert runner.outcome(ether(segment)) == FORWARDED
    node.flow_reader().read_raw()
    assert runner.outcome(_error4(ROUTER, 3, 4, segment), abi.PROG_TO_POD) == FORWARDED
    raw = node.flow_reader().read_raw()
    [event] = decode_events(raw)
    assert event.flags & abi.EVENT_F_RELATED
    assert (event.src_ip, event.dst_ip, event.protocol) == (ROUTER, POD_IP, 1)
    assert (event.icmp_type, event.icmp_code) == (3, 4)
    assert event.verdict == Verdict.FORWARDED and event.is_reply
    assert event.direction == TrafficDirection.EGRESS  # the connection's direction
    assert event.src_identity == abi.IDENTITY_WORLD  # the router is unknown
    hubble = FlowDecoder(StaticMetadata(), DecoderConfig(node_name="t")).decode(
        record.EVENT.unpack(raw), 1
    )
    assert hubble.trace_reason == flow_pb2.RELATED


def test_packet_too_big_for_an_allowed_ipv6_flow(node, runner):
    segment = ipv6(POD_IP6, PEER6, 6, tcp(40303, 443, TCP_ACK))
    assert runner.outcome(ether(segment, ETH_P_IPV6)) == FORWARDED
    assert runner.outcome(_error6(ROUTER6, 2, segment[:48]), abi.PROG_TO_POD) == FORWARDED
    unknown = ipv6(POD_IP6, PEER6, 6, tcp(40304, 443, TCP_ACK))
    assert runner.outcome(_error6(ROUTER6, 2, unknown[:48]), abi.PROG_TO_POD) == DENIED


def test_an_error_quoting_the_wrong_direction_is_not_related(node, runner):
    # the pod's own connection is pod -> peer; an error claiming the pod *received* that
    # packet (quote from peer to pod) does not belong to it
    segment = ipv4(POD_IP, PEER, 6, tcp(40305, 443, TCP_SYN))
    assert runner.outcome(ether(segment)) == FORWARDED
    backwards = ipv4(PEER, POD_IP, 6, tcp(40305, 443, TCP_SYN))
    assert runner.outcome(_error4(PEER, 3, 3, backwards), abi.PROG_TO_POD) == DENIED


def test_an_echo_error_is_related_to_its_ping(node, runner):
    ping = ipv4(POD_IP, PEER, 1, icmp(8, ident=77))
    assert runner.outcome(ether(ping)) == FORWARDED
    assert runner.outcome(_error4(ROUTER, 11, 0, ping[:28]), abi.PROG_TO_POD) == FORWARDED


def test_an_error_goes_only_back_to_the_quoted_sender(testrun_node, runner):
    # ingress open, egress allows nothing: the pod answers an inbound query with an error
    testrun_node.replace_policy(11, EndpointPolicy(enforce_egress=True))
    query = ipv4(PEER, POD_IP, 17, udp(40310, 53))
    assert runner.outcome(ether(query), abi.PROG_TO_POD) == FORWARDED

    def error_to(destination: str) -> bytes:
        header = bytes([3, 3, 0, 0, 0, 0, 0, 0])
        return ether(ipv4(POD_IP, destination, 1, header + query))

    assert runner.outcome(error_to(PEER)) == FORWARDED
    # the same error addressed to a third host is no part of the flow: egress denies it
    assert runner.outcome(error_to("10.98.0.99")) == DENIED


def test_an_error_about_a_connection_awaiting_revocation_is_decided_by_policy(node, runner):
    node.set_revoke_on_policy_change(True)
    try:
        query = ipv4(POD_IP, PEER, 17, udp(40320, 53))
        assert runner.outcome(ether(query)) == FORWARDED
        node.replace_policy(11, EndpointPolicy(enforce_ingress=True, enforce_egress=True))
        # the query's entry still says FORWARDED until its next packet is decided again
        assert runner.outcome(_error4(PEER, 3, 3, query), abi.PROG_TO_POD) == DENIED
    finally:
        node.set_revoke_on_policy_change(False)
