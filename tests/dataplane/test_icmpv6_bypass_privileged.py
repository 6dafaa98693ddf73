"""ICMPv6 neighbour discovery and MLD bypass policy and anti-spoofing only in the form
RFC 4861 / RFC 3810 let a receiver accept (bpf/lib/parse.h): ND with hop limit 255, MLD
with hop limit 1 from a link-local source (or ::, RFC 3590).  Any other packet of these
types is an ordinary ICMPv6 packet: decided by policy and anti-spoofing, counted and
reported."""

from __future__ import annotations

import dataclasses

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, EventType
from septum.dataplane.events import Flow, decode_events
from septum.dataplane.packets import ETH_P_IPV6, ether, icmp, ipv6
from septum.dataplane.policy import EndpointPolicy

from .conftest import FORWARDED, POD_IP6, TESTRUN_SPEC, dropped

pytestmark = pytest.mark.privileged

LINK_LOCAL, PEER6 = "fe80::1", "fd00:99::2"
SPOOFED = "fd00:77::5"
SOLICITED_NODE, ALL_NODES, MLDV2_ROUTERS = "ff02::1:ff00:2", "ff02::1", "ff02::16"
ROUTER_SOLICIT, ROUTER_ADVERT, NEIGHBOR_SOLICIT, NEIGHBOR_ADVERT, REDIRECT = range(133, 138)
MLD_QUERY, MLD_REPORT, MLD_DONE, MLDV2_REPORT = 130, 131, 132, 143
ND_HOP_LIMIT, MLD_HOP_LIMIT = 255, 1


def icmpv6(src: str, dst: str, kind: int, hop_limit: int, payload: bytes = b"") -> bytes:
    header = bytearray(ipv6(src, dst, 58, icmp(kind) + payload))
    header[7] = hop_limit  # packets.ipv6 always writes 64
    return ether(bytes(header), ETH_P_IPV6)


def events(node) -> list[Flow]:
    return decode_events(node.flow_reader().read_raw())


@pytest.fixture
def locked_down(testrun_node):
    """The test-run endpoint with deny-all policy both ways, the ring drained."""
    testrun_node.replace_policy(
        TESTRUN_SPEC.endpoint_id, EndpointPolicy(enforce_ingress=True, enforce_egress=True)
    )
    events(testrun_node)
    return testrun_node


@pytest.mark.parametrize(
    ("src", "dst", "kind", "hop_limit"),
    [
        (POD_IP6, SOLICITED_NODE, NEIGHBOR_SOLICIT, ND_HOP_LIMIT),
        (POD_IP6, PEER6, NEIGHBOR_ADVERT, ND_HOP_LIMIT),
        (LINK_LOCAL, "ff02::2", ROUTER_SOLICIT, ND_HOP_LIMIT),
        (LINK_LOCAL, MLDV2_ROUTERS, MLDV2_REPORT, MLD_HOP_LIMIT),
        (LINK_LOCAL, SOLICITED_NODE, MLD_REPORT, MLD_HOP_LIMIT),
        (LINK_LOCAL, "ff02::2", MLD_DONE, MLD_HOP_LIMIT),
        ("::", MLDV2_ROUTERS, MLDV2_REPORT, MLD_HOP_LIMIT),  # link-local still tentative
        ("::", SOLICITED_NODE, NEIGHBOR_SOLICIT, ND_HOP_LIMIT),  # duplicate address detection
    ],
    ids=["ns", "na", "rs", "mldv2-report", "mld-report", "mld-done", "mld-dad", "ns-dad"],
)
def test_link_control_as_the_rfcs_send_it_bypasses_policy(
    runner, locked_down, src, dst, kind, hop_limit
):
    assert runner.outcome(icmpv6(src, dst, kind, hop_limit)) == FORWARDED
    assert events(locked_down) == []  # no event, no conntrack entry
    assert locked_down.conntrack() == []


@pytest.mark.parametrize(
    ("src", "dst", "kind", "hop_limit"),
    [
        (POD_IP6, SOLICITED_NODE, NEIGHBOR_SOLICIT, 64),
        (POD_IP6, "2001:db8::1", NEIGHBOR_ADVERT, 254),
        (LINK_LOCAL, MLDV2_ROUTERS, MLDV2_REPORT, 64),
        (POD_IP6, MLDV2_ROUTERS, MLDV2_REPORT, MLD_HOP_LIMIT),
        (POD_IP6, "2001:db8::2", MLD_REPORT, MLD_HOP_LIMIT),
        ("fec0::1", MLDV2_ROUTERS, MLDV2_REPORT, MLD_HOP_LIMIT),  # site-local is not fe80::/10
        ("::", "2001:db8::3", MLD_REPORT, 64),
    ],
    ids=[
        "ns-hop-64",
        "na-routed",
        "mld-hop-64",
        "mld-global-src",
        "mld-offlink",
        "mld-fec0",
        "mld-unspecified-routed",
    ],
)
def test_any_other_form_is_decided_by_policy_and_reported(
    runner, locked_down, src, dst, kind, hop_limit
):
    # an egress-locked pod exfiltrating through "neighbour discovery" or "MLD" (each case
    # its own tuple: drop events are rate-limited per flow)
    frame = icmpv6(src, dst, kind, hop_limit, payload=b"secret" * 20)
    assert runner.outcome(frame) == dropped(DropReason.POLICY_DENIED)
    (drop,) = events(locked_down)
    assert (drop.event_type, drop.icmp_type) == (EventType.DROP, kind)


def test_a_redirect_does_not_pass_a_deny_all_ingress(runner, locked_down):
    routed = icmpv6(PEER6, POD_IP6, REDIRECT, 64)
    assert runner.outcome(routed, abi.PROG_TO_POD) == dropped(DropReason.POLICY_DENIED)
    on_link = icmpv6(LINK_LOCAL, POD_IP6, REDIRECT, ND_HOP_LIMIT)
    assert runner.outcome(on_link, abi.PROG_TO_POD) == FORWARDED


def test_an_mld_query_from_a_routed_source_is_policed(runner, locked_down):
    query = icmpv6(PEER6, ALL_NODES, MLD_QUERY, MLD_HOP_LIMIT)
    assert runner.outcome(query, abi.PROG_TO_POD) == dropped(DropReason.POLICY_DENIED)


def test_spoofed_sources_meet_anti_spoofing(runner, testrun_node):
    testrun_node.upsert_endpoint(dataclasses.replace(TESTRUN_SPEC, check_source=True))
    for frame in (
        icmpv6(SPOOFED, MLDV2_ROUTERS, MLDV2_REPORT, MLD_HOP_LIMIT),
        icmpv6(SPOOFED, "2001:db8::1", NEIGHBOR_SOLICIT, 64),
    ):
        assert runner.outcome(frame) == dropped(DropReason.INVALID_SOURCE_IP)


def test_an_allowed_ordinary_icmpv6_packet_of_these_types_is_a_flow(runner, testrun_node):
    events(testrun_node)
    assert runner.outcome(icmpv6(POD_IP6, PEER6, NEIGHBOR_SOLICIT, 64)) == FORWARDED
    (verdict,) = events(testrun_node)
    assert (verdict.event_type, verdict.icmp_type) == (EventType.POLICY_VERDICT, NEIGHBOR_SOLICIT)
