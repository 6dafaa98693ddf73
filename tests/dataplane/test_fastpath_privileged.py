"""The established fast path (bpf/lib/fastpath.h) against the full path: packets of an
established IPv4 connection are finished by the fast path only when the full path would do
nothing more than refresh the entry and count them; every malformed or odd packet of the
same flow still gets the full path's verdict, and every event the aggregation rule promises
is still emitted."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroute2 import IPRoute

from septum.dataplane import abi, netns
from septum.dataplane.abi import DropReason, EventType, Verdict
from septum.dataplane.datapath import EndpointSpec
from septum.dataplane.events import Flow, decode_events
from septum.dataplane.packets import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_SYN,
    ether,
    ipv4,
    ipv6,
    tcp,
    tcp4,
    tcp6,
    udp4,
)

from .conftest import FORWARDED, dropped

pytestmark = pytest.mark.privileged

POD, PEER = "10.99.0.1", "10.99.0.2"
POD6, PEER6 = "fd00:99::1", "fd00:99::2"


def events(node) -> list[Flow]:
    return decode_events(node.flow_reader().read_raw())


def entry_of(node, sport: int, dport: int):
    """The one conntrack entry of POD:sport <-> PEER:dport (keys are canonical)."""
    ports = {sport, dport}
    found = [
        entry
        for key, entry in node.conntrack()
        if {
            ipaddress.ip_address(bytes(key.src_addr[:4])).exploded,
            ipaddress.ip_address(bytes(key.dst_addr[:4])).exploded,
        }
        == {POD, PEER}
        and {
            int.from_bytes(key.sport_be.to_bytes(2, "little"), "big"),
            int.from_bytes(key.dport_be.to_bytes(2, "little"), "big"),
        }
        == ports
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def tcp_flow(runner, testrun_node):
    """An established TCP connection POD:40000 -> PEER:80 (handshake through both hooks),
    with the ring drained."""
    events(testrun_node)  # whatever earlier tests of this module left
    assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_SYN)) == FORWARDED
    assert (
        runner.outcome(tcp4(PEER, POD, 80, 40000, TCP_SYN | TCP_ACK), abi.PROG_TO_POD) == FORWARDED
    )
    assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_ACK)) == FORWARDED
    handshake = events(testrun_node)
    # the SYN and the SYN-ACK; the last ACK is not reported (only SYN, FIN, RST are)
    assert [(e.event_type, e.is_reply) for e in handshake] == [
        (EventType.POLICY_VERDICT, False),
        (EventType.TRACE, True),
    ]
    return testrun_node


def test_established_packets_are_counted_without_events(runner, tcp_flow):
    before = entry_of(tcp_flow, 40000, 80)
    fwd, rev = before.fwd_packets, before.rev_packets
    for _ in range(5):
        assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_ACK)) == FORWARDED
        assert runner.outcome(tcp4(PEER, POD, 80, 40000, TCP_ACK), abi.PROG_TO_POD) == FORWARDED
    after = entry_of(tcp_flow, 40000, 80)
    assert (after.fwd_packets - fwd, after.rev_packets - rev) == (5, 5)
    assert after.fwd_bytes > before.fwd_bytes and after.rev_bytes > before.rev_bytes
    assert events(tcp_flow) == []


@pytest.fixture
def tcp6_flow(runner, testrun_node):
    """An established IPv6 TCP connection POD6:40000 -> PEER6:80, ring drained."""
    events(testrun_node)
    assert runner.outcome(tcp6(POD6, PEER6, 40000, 80, TCP_SYN)) == FORWARDED
    assert (
        runner.outcome(tcp6(PEER6, POD6, 80, 40000, TCP_SYN | TCP_ACK), abi.PROG_TO_POD)
        == FORWARDED
    )
    assert runner.outcome(tcp6(POD6, PEER6, 40000, 80, TCP_ACK)) == FORWARDED
    assert len(events(testrun_node)) == 2  # SYN, SYN-ACK (the last ACK is not reported)
    return testrun_node


def _ipv6_entry(node):
    (entry,) = [e for k, e in node.conntrack() if k.ip_version == abi.IPVersion.V6]
    return entry


def test_established_ipv6_packets_are_counted_without_events(runner, tcp6_flow):
    fwd, rev = _ipv6_entry(tcp6_flow).fwd_packets, _ipv6_entry(tcp6_flow).rev_packets
    for _ in range(4):
        assert runner.outcome(tcp6(POD6, PEER6, 40000, 80, TCP_ACK)) == FORWARDED
        assert runner.outcome(tcp6(PEER6, POD6, 80, 40000, TCP_ACK), abi.PROG_TO_POD) == FORWARDED
    after = _ipv6_entry(tcp6_flow)
    assert (after.fwd_packets - fwd, after.rev_packets - rev) == (4, 4)
    assert events(tcp6_flow) == []


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (
            ether(ipv6(POD6, PEER6, 6, tcp(40000, 80, TCP_ACK), payload_length=900), 0x86DD),
            DropReason.INVALID_IPV6_LENGTH,
        ),
        (
            ether(ipv6(POD6, PEER6, 6, tcp(40000, 80, TCP_ACK), payload_length=10), 0x86DD),
            DropReason.TRUNCATED_TCP,
        ),
        (
            ether(ipv6(POD6, PEER6, 6, tcp(40000, 80, TCP_ACK, doff=4)), 0x86DD),
            DropReason.INVALID_TCP_DATA_OFFSET,
        ),
    ],
    ids=["payload-length-beyond-packet", "payload-length-cuts-tcp", "tcp-doff-4"],
)
def test_malformed_ipv6_packets_of_an_established_flow_get_the_full_verdict(
    runner, tcp6_flow, frame, reason
):
    assert runner.outcome(frame) == dropped(reason)


def test_a_new_flag_takes_the_full_path_and_syn_fin_rst_report(runner, tcp_flow):
    # PSH is new in this direction: recorded (the full path), not reported
    assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_ACK | TCP_PSH)) == FORWARDED
    assert events(tcp_flow) == []
    assert entry_of(tcp_flow, 40000, 80).fwd_flags_seen & TCP_PSH
    assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_ACK | TCP_FIN)) == FORWARDED
    (fin,) = events(tcp_flow)
    assert fin.tcp_flags & TCP_FIN and not fin.flags & abi.EVENT_F_CT_CLOSE  # half-closed
    assert fin.packets == 3  # the last ACK of the handshake, the PSH and the FIN
    assert entry_of(tcp_flow, 40000, 80).state == abi.CtState.ESTABLISHED
    back_fin = tcp4(PEER, POD, 80, 40000, TCP_ACK | TCP_FIN)
    assert runner.outcome(back_fin, abi.PROG_TO_POD) == FORWARDED
    (close,) = events(tcp_flow)
    assert close.flags & abi.EVENT_F_CT_CLOSE  # both sides closed
    assert entry_of(tcp_flow, 40000, 80).state == abi.CtState.CLOSING
    # a fresh SYN on the closing entry is a new connection (policy verdict again)
    assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_SYN)) == FORWARDED
    (reopen,) = events(tcp_flow)
    assert reopen.event_type == EventType.POLICY_VERDICT


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (
            ether(ipv4(POD, PEER, 6, tcp(40000, 80, TCP_ACK), total_length=9000)),
            DropReason.INVALID_IPV4_LENGTH,
        ),
        (
            ether(ipv4(POD, PEER, 6, tcp(40000, 80, TCP_ACK), total_length=30)),
            DropReason.TRUNCATED_TCP,
        ),
        (
            ether(ipv4(POD, PEER, 6, tcp(40000, 80, TCP_ACK, doff=4))),
            DropReason.INVALID_TCP_DATA_OFFSET,
        ),
        (ether(ipv4(POD, PEER, 6, tcp(40000, 80, TCP_ACK)[:16])), DropReason.TRUNCATED_TCP),
    ],
    ids=["total-length-beyond-packet", "total-length-cuts-tcp", "tcp-doff-4", "tcp-cut"],
)
def test_malformed_packets_of_an_established_flow_get_the_full_verdict(
    runner, tcp_flow, frame, reason
):
    assert runner.outcome(frame) == dropped(reason)


def test_odd_but_valid_packets_of_an_established_flow_take_the_full_path(runner, tcp_flow):
    fwd = entry_of(tcp_flow, 40000, 80).fwd_packets
    with_options = ether(ipv4(POD, PEER, 6, tcp(40000, 80, TCP_ACK), options=b"\x01" * 4))
    assert runner.outcome(with_options) == FORWARDED
    assert entry_of(tcp_flow, 40000, 80).fwd_packets == fwd + 1  # same connection
    assert events(tcp_flow) == []


def test_an_expired_entry_is_a_new_connection(runner, tcp_flow):
    key = next(k for k, _ in tcp_flow.conntrack4_map.items())
    entry = tcp_flow.conntrack4_map.lookup(key)
    entry.expires = 0
    tcp_flow.conntrack4_map.update(key, entry)
    assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_ACK)) == FORWARDED
    (picked_up,) = events(tcp_flow)
    assert picked_up.event_type == EventType.POLICY_VERDICT


def test_a_revoked_entry_drops_on_the_fast_path_too(runner, tcp_flow):
    key = next(k for k, _ in tcp_flow.conntrack4_map.items())
    entry = tcp_flow.conntrack4_map.lookup(key)
    entry.verdict = Verdict.DROPPED
    entry.drop_reason = DropReason.POLICY_DENIED
    tcp_flow.conntrack4_map.update(key, entry)
    assert runner.outcome(tcp4(POD, PEER, 40000, 80, TCP_ACK)) == dropped(DropReason.POLICY_DENIED)


def test_udp_reports_the_first_reply_only(runner, testrun_node):
    out, back = udp4(POD, PEER, 40001, 53), udp4(PEER, POD, 53, 40001)
    events(testrun_node)
    assert runner.outcome(out) == FORWARDED
    assert runner.outcome(out) == FORWARDED
    assert [e.is_reply for e in events(testrun_node)] == [False]
    assert runner.outcome(back, abi.PROG_TO_POD) == FORWARDED
    assert runner.outcome(back, abi.PROG_TO_POD) == FORWARDED
    assert [e.is_reply for e in events(testrun_node)] == [True]
    assert entry_of(testrun_node, 40001, 53).rev_packets == 1  # reported, then one more


def test_the_same_tuple_on_another_interface_is_another_connection(runner, testrun_node):
    assert runner.outcome(tcp4(POD, PEER, 40002, 80, TCP_SYN)) == FORWARDED
    events(testrun_node)
    # the established entry belongs to ifindex 1; on ifindex 2 (no endpoint) the packet is
    # not part of it and takes the full path, which finds no endpoint there
    result = testrun_node.test_run(
        abi.PROG_FROM_POD, tcp4(POD, PEER, 40002, 80, TCP_ACK), ifindex=2
    )
    assert result.retval == 2


BIG_IFINDEX = (1 << abi.CT4_IFINDEX_BITS) + 7


@pytest.fixture
def big_ifindex_node(node, sandbox):
    """The sandboxed node datapath with an endpoint on an interface whose index does not
    fit sep_ct4's 24 bits."""
    with netns.entered(sandbox.node_ns), IPRoute() as ipr:
        ipr.link("add", ifname="sdpbig0", kind="veth", peer="sdpbig1", index=BIG_IFINDEX)
    node.upsert_endpoint(
        EndpointSpec(21, BIG_IFINDEX, 5021, ipv4=POD, check_source=False, attach=False)
    )
    return node


def test_an_interface_beyond_24_bits_keeps_its_ipv4_flows_in_the_full_table(big_ifindex_node):
    node = big_ifindex_node
    node.flow_reader().read_raw()
    for flags in (TCP_SYN, TCP_ACK, TCP_ACK):
        result = node.test_run(
            abi.PROG_FROM_POD, tcp4(POD, PEER, 40000, 80, flags), ifindex=BIG_IFINDEX
        )
        assert result.retval == 0
    # one new connection; the ACKs are not reported (only SYN, FIN and RST are)
    kinds = [e.event_type for e in events(node)]
    assert kinds == [EventType.POLICY_VERDICT]
    assert list(node.conntrack4_map.keys()) == []
    ((key, entry),) = node.conntrack()
    assert (key.ifindex, key.ip_version, key.protocol) == (BIG_IFINDEX, abi.IPVersion.V4, 6)
    assert entry.fwd_packets == 2  # both ACKs, counted since the SYN's event


# ---- differential: the fast path against the full path --------------------------------


def _snapshot(node) -> list[tuple[int, bytes, bytes]]:
    return [
        (version, bytes(key), bytes(entry))
        for version, table in ((4, node.conntrack4_map), (6, node.conntrack6_map))
        for key, entry in table.items()
    ]


def _restore(node, snapshot: list[tuple[int, bytes, bytes]]) -> None:
    node.flush_conntrack()
    for version, key, entry in snapshot:
        table, key_type = (
            (node.conntrack4_map, abi.Ct4Key) if version == 4 else (node.conntrack6_map, abi.CtKey)
        )
        table.update(key_type.from_buffer_copy(key), abi.CtEntry.from_buffer_copy(entry))


def _outcome(runner, node, frame: bytes, program: str):
    """(return code, the counter that moved, conntrack afterwards, events if forwarded)."""
    events(node)
    before = node.counters()
    retval = runner.retval(frame, program)
    after = node.counters()
    moved = sorted(
        (key.direction, key.verdict, key.drop_reason)
        for key, value in after.items()
        if value.packets != (before[key].packets if key in before else 0)
    )
    emitted = [
        (e.event_type, e.verdict, e.is_reply, e.tcp_flags, e.packets, e.bytes, e.rule_id)
        for e in events(node)
    ]
    # the deadline moves with the clock between the two runs: compare the rest
    table = []
    for tables in (node.conntrack4_map, node.conntrack6_map):
        for key, entry in tables.items():
            entry.expires = 0
            table.append((bytes(key), bytes(entry)))
    # drop events are rate-limited per flow across runs: compare them only when forwarded
    return retval, moved, table, emitted if retval == 0 else None


@st.composite
def mutated_packets(draw) -> tuple[bytes, str]:
    """A packet of the established flow (either direction), with a few header bytes
    replaced and maybe cut short."""
    reply = draw(st.booleans())
    flags = draw(st.sampled_from([TCP_ACK, TCP_ACK | TCP_PSH, TCP_ACK | TCP_FIN, TCP_SYN]))
    make, pod, peer = draw(st.sampled_from([(tcp4, POD, PEER), (tcp6, POD6, PEER6)]))
    frame = bytearray(
        make(peer, pod, 80, 40000, flags) if reply else make(pod, peer, 40000, 80, flags)
    )
    for _ in range(draw(st.integers(0, 3))):
        frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, 8))
    if cut:
        frame = frame[: len(frame) - cut]
    return bytes(frame), abi.PROG_TO_POD if reply else abi.PROG_FROM_POD


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=mutated_packets())
def test_fast_path_and_full_path_agree_on_every_packet(runner, tcp_flow, tcp6_flow, case):
    """Revocation mode sends every packet down the full path (and re-checks nothing while
    the policy revision is unchanged): with the same conntrack state before, both modes
    give the same verdict, counter, conntrack state after and events."""
    frame, program = case
    start = _snapshot(tcp_flow)
    try:
        fast = _outcome(runner, tcp_flow, frame, program)
        _restore(tcp_flow, start)
        tcp_flow.set_revoke_on_policy_change(True)
        full = _outcome(runner, tcp_flow, frame, program)
    finally:
        tcp_flow.set_revoke_on_policy_change(False)
        _restore(tcp_flow, start)
    assert fast == full
