"""Malformed and odd packets through BPF_PROG_TEST_RUN: every one gets the documented
verdict and a counted, distinct drop reason (docs/datapath.md, bpf/lib/parse.h)."""

from __future__ import annotations

import errno
import socket
import time

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, TrafficDirection, Verdict
from septum.dataplane.datapath import EndpointSpec
from septum.dataplane.errors import LibbpfError
from septum.dataplane.packets import (
    ETH_P_ARP,
    ETH_P_IPV6,
    TCP_SYN,
    ether,
    icmp,
    ipv4,
    ipv6,
    ipv6_extensions,
    ipv6_fragment,
    sctp,
    sctp4,
    sctp6,
    tcp,
    tcp4,
    tcp6,
    udp,
    udp4,
)
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import open_socket

from .conftest import FORWARDED, dropped

pytestmark = pytest.mark.privileged

SRC, DST = "10.99.0.1", "10.99.0.2"
SRC6, DST6 = "fd00:99::1", "fd00:99::2"
VALID = {
    "tcp4": tcp4(SRC, DST, 40000, 80),
    "tcp6": tcp6(SRC6, DST6, 40000, 80),
    "udp4": udp4(SRC, DST, 40000, 53),
    "sctp4": sctp4(SRC, DST, 40000, 5000),
    "sctp6": sctp6(SRC6, DST6, 40000, 5000),
    "icmp-echo": ether(ipv4(SRC, DST, 1, icmp(8))),
    "icmp-unreachable": ether(ipv4(SRC, DST, 1, icmp(3, 1))),
    "icmpv6-echo": ether(ipv6(SRC6, DST6, 58, icmp(128)), ETH_P_IPV6),
    "ipv4-options": ether(ipv4(SRC, DST, 6, tcp(40000, 80), options=b"\x01\x01\x01\x00")),
    "ipv4-max-options": ether(ipv4(SRC, DST, 6, tcp(40000, 80), options=bytes(40))),
    "tcp-options": ether(ipv4(SRC, DST, 6, tcp(40000, 80, doff=15))),
    "gre-no-ports": ether(ipv4(SRC, DST, 47, b"\0" * 8)),
    "ethernet-padding": tcp4(SRC, DST, 40000, 80) + bytes(20),
    "oversized-3500": ether(ipv4(SRC, DST, 6, tcp(40000, 80, payload=bytes(3500 - 54)))),
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_packets_are_forwarded(runner, name):
    assert runner.outcome(VALID[name]) == FORWARDED


def test_arp_and_neighbour_discovery_bypass_policy(runner, testrun_node):
    testrun_node.replace_policy(11, EndpointPolicy(enforce_egress=True))  # deny all egress
    arp = ether(bytes(28), ETH_P_ARP)
    solicitation = bytearray(ether(ipv6(SRC6, "ff02::1:ff00:2", 58, icmp(135)), ETH_P_IPV6))
    solicitation[14 + 7] = 255  # hop limit: ND bypasses only as RFC 4861 sends it
    assert runner.outcome(arp) == FORWARDED
    assert runner.outcome(bytes(solicitation)) == FORWARDED
    assert runner.outcome(tcp4(SRC, DST, 40000, 80)) == dropped(DropReason.POLICY_DENIED)


def test_unknown_ethertype(runner):
    assert runner.outcome(ether(bytes(46), 0x88CC)) == dropped(DropReason.UNSUPPORTED_L3_PROTOCOL)


def test_incomplete_ip_header_is_refused_by_the_test_run(runner):
    # The kernel refuses tc test runs shorter than Ethernet + IP header: see the wire test.
    for length in (0, 1, 13, 14, 33):
        with pytest.raises(LibbpfError) as caught:
            runner.retval(tcp4(SRC, DST, 1, 2)[:length])
        assert caught.value.errno == errno.EINVAL


class Wire:
    """A pod whose eth0 sends raw frames (AF_PACKET) into the attached datapath: for frames
    the kernel refuses to test-run (tc test runs need a whole IP header), the real hook."""

    def __init__(self, node, sandbox) -> None:
        self.node = node
        self.pod = sandbox.add_pod("w", "10.98.0.1")
        node.upsert_endpoint(EndpointSpec(21, self.pod.host_interface, 6001, ipv4="10.98.0.1"))
        self.sock = open_socket(self.pod.name, socket.AF_PACKET, socket.SOCK_RAW)
        self.sock.bind(("eth0", 0))

    def dropped_as(self, frame: bytes) -> int:
        """Send `frame`; return the drop reason whose egress counter moved."""
        before = self.node.counters()
        self.sock.send(frame)
        deadline = time.monotonic() + 5
        moved: list = []
        while time.monotonic() < deadline:
            after = self.node.counters()
            moved = [
                key
                for key, value in after.items()
                if key.verdict == Verdict.DROPPED
                and value.packets != (before[key].packets if key in before else 0)
            ]
            if moved:
                break
        assert len(moved) == 1, f"drop counters moved: {moved}"
        return moved[0].drop_reason

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def wire(node, sandbox):
    w = Wire(node, sandbox)
    try:
        yield w
    finally:
        w.close()


def test_truncated_ip_headers_on_the_real_hook(wire):
    # The kernel refuses tc test runs whose IP header is incomplete; a pod can still send
    # such frames, so they go through the attached program for real.
    v4 = tcp4(SRC, DST, 40000, 80)
    for cut in (14, 15, 20, 33):
        assert wire.dropped_as(v4[:cut]) == DropReason.TRUNCATED_IPV4, cut
    v6 = tcp6(SRC6, DST6, 40000, 80)
    for cut in (14, 30, 53):
        assert wire.dropped_as(v6[:cut]) == DropReason.TRUNCATED_IPV6, cut


def test_ipv4_tcp_truncated_at_every_byte(runner):
    frame = tcp4(SRC, DST, 40000, 80)  # 14 + 20 + 20 bytes
    for cut in range(34, len(frame)):
        # total length still claims 40 bytes
        assert runner.outcome(frame[:cut]) == dropped(DropReason.INVALID_IPV4_LENGTH), cut
        honest = ether(ipv4(SRC, DST, 6, tcp(40000, 80)[: cut - 34]))
        assert runner.outcome(honest) == dropped(DropReason.TRUNCATED_TCP), cut


def test_ipv6_tcp_truncated_at_every_byte(runner):
    frame = tcp6(SRC6, DST6, 40000, 80)  # 14 + 40 + 20 bytes
    for cut in range(54, len(frame)):
        assert runner.outcome(frame[:cut]) == dropped(DropReason.INVALID_IPV6_LENGTH), cut
        honest = ether(ipv6(SRC6, DST6, 6, tcp(40000, 80)[: cut - 54]), ETH_P_IPV6)
        assert runner.outcome(honest) == dropped(DropReason.TRUNCATED_TCP), cut


@pytest.mark.parametrize(
    ("protocol", "header", "reason"),
    [
        (17, udp(1, 53), DropReason.TRUNCATED_UDP),
        (132, sctp(1, 5000), DropReason.TRUNCATED_SCTP),
        (1, icmp(8), DropReason.TRUNCATED_ICMP),
    ],
)
def test_l4_truncated_ipv4(runner, protocol, header, reason):
    for keep in range(0, 8):
        frame = ether(ipv4(SRC, DST, protocol, header[:keep]))
        assert runner.outcome(frame) == dropped(reason), keep


def test_icmpv6_truncated(runner):
    for keep in range(0, 8):
        frame = ether(ipv6(SRC6, DST6, 58, icmp(128)[:keep]), ETH_P_IPV6)
        assert runner.outcome(frame) == dropped(DropReason.TRUNCATED_ICMPV6), keep


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (ether(ipv4(SRC, DST, 6, tcp(1, 80), ihl=4)), DropReason.INVALID_IPV4_IHL),
        (ether(ipv4(SRC, DST, 6, tcp(1, 80), ihl=0)), DropReason.INVALID_IPV4_IHL),
        (ether(ipv4(SRC, DST, 6, b"", ihl=15)), DropReason.INVALID_IPV4_IHL),
        (ether(ipv4(SRC, DST, 6, tcp(1, 80), total_length=10)), DropReason.INVALID_IPV4_LENGTH),
        (ether(ipv4(SRC, DST, 6, tcp(1, 80), total_length=9000)), DropReason.INVALID_IPV4_LENGTH),
        (ether(ipv4(SRC, DST, 6, tcp(1, 80), version=6)), DropReason.INVALID_IP_VERSION),
        (
            ether(ipv6(SRC6, DST6, 6, tcp(1, 80), version=4), ETH_P_IPV6),
            DropReason.INVALID_IP_VERSION,
        ),
        (ether(ipv4(SRC, DST, 6, tcp(1, 80, doff=4))), DropReason.INVALID_TCP_DATA_OFFSET),
        (ether(ipv4(SRC, DST, 6, tcp(1, 80)[:20] + b"\xf0")), DropReason.INVALID_TCP_DATA_OFFSET),
    ],
    ids=[
        "ihl-4",
        "ihl-0",
        "ihl-15-short",
        "total-length-below-header",
        "total-length-beyond-packet",
        "version-6-in-ipv4",
        "version-4-in-ipv6",
        "tcp-doff-4",
        "tcp-doff-past-payload",
    ],
)
def test_bad_headers(runner, frame, reason):
    if reason == DropReason.INVALID_TCP_DATA_OFFSET and frame[-1:] == b"\xf0":
        # data offset 15 (60 bytes) in a 21-byte TCP segment
        raw = bytearray(ether(ipv4(SRC, DST, 6, tcp(1, 80))))
        raw[14 + 20 + 12] = 0xF0
        frame = bytes(raw)
    assert runner.outcome(frame) == dropped(reason)


def _ext_chain(count: int) -> bytes:
    first, chain = ipv6_extensions([(60, 0)] * count, 6)
    return ether(ipv6(SRC6, DST6, first, chain + tcp(40000, 80)), ETH_P_IPV6)


def test_ipv6_extension_header_chains(runner):
    hop_dest_routing = ipv6_extensions([(0, 0), (60, 1), (43, 0)], 6)
    frame = ether(
        ipv6(SRC6, DST6, hop_dest_routing[0], hop_dest_routing[1] + tcp(40000, 80)), ETH_P_IPV6
    )
    assert runner.outcome(frame) == FORWARDED
    assert runner.outcome(_ext_chain(8)) == FORWARDED
    assert runner.outcome(_ext_chain(9)) == dropped(DropReason.INVALID_IPV6_EXTENSION_HEADER)
    # an extension header that claims more bytes than the payload has
    first, chain = ipv6_extensions([(60, 30)], 6)
    short = ether(ipv6(SRC6, DST6, first, chain[:16]), ETH_P_IPV6)
    assert runner.outcome(short) == dropped(DropReason.INVALID_IPV6_EXTENSION_HEADER)
    # cut inside the extension header itself
    cut = ether(ipv6(SRC6, DST6, 60, b"\x06"), ETH_P_IPV6)
    assert runner.outcome(cut) == dropped(DropReason.INVALID_IPV6_EXTENSION_HEADER)


def test_ipv4_fragments_follow_their_first_fragment(runner, testrun_node):
    first = ether(ipv4(SRC, DST, 17, udp(40000, 53, bytes(16)), ident=77, more_fragments=True))
    later = ether(ipv4(SRC, DST, 17, bytes(16), ident=77, fragment_offset=3))
    orphan = ether(ipv4(SRC, DST, 17, bytes(16), ident=78, fragment_offset=3))
    assert runner.outcome(first) == FORWARDED
    assert runner.outcome(later) == FORWARDED
    assert runner.outcome(orphan) == dropped(DropReason.FRAG_NOT_FOUND)

    # with policy: the later fragment gets its first fragment's (denied) verdict
    allow_dns = PolicyEntry(TrafficDirection.EGRESS, protocol=17, port=5353, rule_id=1)
    testrun_node.replace_policy(11, EndpointPolicy(enforce_egress=True, entries=(allow_dns,)))
    first = ether(ipv4(SRC, DST, 17, udp(40001, 53, bytes(16)), ident=79, more_fragments=True))
    later = ether(ipv4(SRC, DST, 17, bytes(16), ident=79, fragment_offset=3))
    assert runner.outcome(first) == dropped(DropReason.POLICY_DENIED)
    assert runner.outcome(later) == dropped(DropReason.POLICY_DENIED)


def test_ipv6_fragments_follow_their_first_fragment(runner):
    first = ether(
        ipv6(SRC6, DST6, 44, ipv6_fragment(17, 0, True, 91) + udp(40000, 53, bytes(16))),
        ETH_P_IPV6,
    )
    later = ether(ipv6(SRC6, DST6, 44, ipv6_fragment(17, 3, False, 91) + bytes(16)), ETH_P_IPV6)
    orphan = ether(ipv6(SRC6, DST6, 44, ipv6_fragment(17, 3, False, 92) + bytes(16)), ETH_P_IPV6)
    assert runner.outcome(first) == FORWARDED
    assert runner.outcome(later) == FORWARDED
    assert runner.outcome(orphan) == dropped(DropReason.FRAG_NOT_FOUND)


def test_sctp_policy_by_port(runner, testrun_node):
    entry = PolicyEntry(TrafficDirection.EGRESS, protocol=132, port=5000, rule_id=3)
    testrun_node.replace_policy(11, EndpointPolicy(enforce_egress=True, entries=(entry,)))
    assert runner.outcome(sctp4(SRC, DST, 40000, 5000)) == FORWARDED
    assert runner.outcome(sctp4(SRC, DST, 40000, 5001)) == dropped(DropReason.POLICY_DENIED)
    assert runner.outcome(sctp6(SRC6, DST6, 40000, 5000)) == FORWARDED
    assert runner.outcome(sctp6(SRC6, DST6, 40000, 5001)) == dropped(DropReason.POLICY_DENIED)


def test_packet_from_an_interface_without_endpoint(testrun_node):
    retval = testrun_node.test_run(abi.PROG_FROM_POD, tcp4(SRC, DST, 1, 2), ifindex=0).retval
    # ifindex 0 in the test-run context means the loopback, which has the endpoint
    assert retval == 0
    testrun_node.remove_endpoint(11)
    counters_before = testrun_node.counters()
    assert testrun_node.test_run(abi.PROG_FROM_POD, tcp4(SRC, DST, 1, 2), ifindex=1).retval == 2
    after = testrun_node.counters()
    moved = {k for k in after if after[k] != counters_before.get(k)}
    assert [k.drop_reason for k in moved] == [DropReason.NO_LOCAL_ENDPOINT]


def test_tcp_syn_flags_constant():
    assert TCP_SYN == abi.TcpFlag.SYN
