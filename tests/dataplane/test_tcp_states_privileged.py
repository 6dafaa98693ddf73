"""The TCP state machine of conntrack (bpf/lib/conntrack.h): a half-open handshake keeps the
short SYN timeout, a half-closed connection keeps the established one, and only a FIN from
both sides (or an RST) closes it; the fast path hands every state-changing packet to the
full path, and the CT_CLOSE event flag marks the packet that closed the connection."""

from __future__ import annotations

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import CtState, EventType
from septum.dataplane.events import Flow, decode_events
from septum.dataplane.kernelhz import kernel_hz
from septum.dataplane.packets import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, tcp4, tcp6

from .conftest import FORWARDED, POD_IP, POD_IP6

pytestmark = pytest.mark.privileged

PEER, PEER6 = "10.99.0.2", "fd00:99::2"
SYN_ACK = TCP_SYN | TCP_ACK
FIN_ACK = TCP_FIN | TCP_ACK
# the datapath's defaults (DatapathConfig)
SYN_TIMEOUT_S, CLOSE_TIMEOUT_S = 60, 10


def events(node) -> list[Flow]:
    return decode_events(node.flow_reader().read_raw())


class Connection:
    """One TCP connection pod:40000 -> peer:80 through the test-run hooks (IPv4 or IPv6)."""

    def __init__(self, runner, node, ipv6: bool = False) -> None:
        self.runner, self.node, self.ipv6 = runner, node, ipv6
        events(node)  # whatever earlier tests left in the ring

    def out(self, flags: int) -> None:
        """A packet from the pod (the connection's original direction)."""
        frame = (
            tcp6(POD_IP6, PEER6, 40000, 80, flags)
            if self.ipv6
            else tcp4(POD_IP, PEER, 40000, 80, flags)
        )
        assert self.runner.outcome(frame) == FORWARDED

    def back(self, flags: int) -> None:
        """A packet to the pod (a reply)."""
        frame = (
            tcp6(PEER6, POD_IP6, 80, 40000, flags)
            if self.ipv6
            else tcp4(PEER, POD_IP, 80, 40000, flags)
        )
        assert self.runner.outcome(frame, abi.PROG_TO_POD) == FORWARDED

    def entry(self) -> abi.CtEntry:
        version = abi.IPVersion.V6 if self.ipv6 else abi.IPVersion.V4
        (found,) = [e for k, e in self.node.conntrack() if k.ip_version == version]
        return found

    def state(self) -> CtState:
        return CtState(self.entry().state)

    def life_s(self) -> float:
        """Seconds until the entry expires, by the datapath's own clock."""
        return (self.entry().expires - self.node.jiffies()) / kernel_hz()

    def handshake(self) -> None:
        self.out(TCP_SYN)
        self.back(SYN_ACK)
        self.out(TCP_ACK)
        assert self.state() == CtState.ESTABLISHED
        events(self.node)


@pytest.fixture(params=[False, True], ids=["ipv4", "ipv6"])
def conn(request, runner, testrun_node) -> Connection:
    return Connection(runner, testrun_node, ipv6=request.param)


def test_a_syn_ack_alone_keeps_the_syn_timeout(conn):
    conn.out(TCP_SYN)
    conn.back(SYN_ACK)
    # a half-open handshake (a SYN flood the pod answers) must not hold 6 hours
    assert conn.state() == CtState.SYN_SENT
    assert conn.life_s() <= SYN_TIMEOUT_S
    conn.back(SYN_ACK)  # a retransmitted SYN-ACK: no new flag, the fast path's packet
    assert conn.state() == CtState.SYN_SENT
    conn.out(TCP_ACK)  # the handshake's last ACK
    assert conn.state() == CtState.ESTABLISHED
    assert conn.life_s() > SYN_TIMEOUT_S


def test_a_first_packet_syn_ack_is_not_established(conn):
    conn.back(SYN_ACK)  # e.g. picked up mid-handshake after the table was emptied
    assert conn.state() == CtState.SYN_SENT


def test_the_reply_side_ack_completes_the_handshake_on_the_full_path(conn):
    # The SYN-ACK already showed ACK in the reply direction: this pure ACK carries no new
    # flag, yet it moves the state, so the fast path must not keep it.
    conn.out(TCP_SYN)
    conn.back(SYN_ACK)
    conn.back(TCP_ACK)
    assert conn.state() == CtState.ESTABLISHED


def test_a_half_closed_connection_keeps_the_established_timeout(conn):
    conn.handshake()
    conn.out(FIN_ACK)  # the client's shutdown(SHUT_WR)
    (fin,) = events(conn.node)
    assert fin.tcp_flags & TCP_FIN and not fin.flags & abi.EVENT_F_CT_CLOSE
    assert conn.state() == CtState.ESTABLISHED
    # the server may answer long after the close timeout
    assert conn.life_s() > CLOSE_TIMEOUT_S
    conn.back(TCP_ACK | TCP_PSH)
    conn.back(TCP_ACK)  # steady data from the open side: the fast path's packets
    assert conn.state() == CtState.ESTABLISHED
    assert conn.life_s() > CLOSE_TIMEOUT_S
    conn.out(FIN_ACK)  # a retransmitted FIN closes nothing more
    assert conn.state() == CtState.ESTABLISHED
    events(conn.node)

    conn.back(FIN_ACK)  # the second side's FIN: closed
    (close,) = events(conn.node)
    assert close.is_reply and close.flags & abi.EVENT_F_CT_CLOSE
    assert conn.state() == CtState.CLOSING
    assert conn.life_s() <= CLOSE_TIMEOUT_S


def test_the_reply_side_may_close_first(conn):
    conn.handshake()
    conn.back(FIN_ACK)
    assert conn.state() == CtState.ESTABLISHED
    conn.out(FIN_ACK)
    (_, close) = events(conn.node)
    assert not close.is_reply and close.flags & abi.EVENT_F_CT_CLOSE
    assert conn.state() == CtState.CLOSING


def test_an_rst_closes_at_once(conn):
    conn.handshake()
    conn.back(TCP_RST)
    (rst,) = events(conn.node)
    assert rst.flags & abi.EVENT_F_CT_CLOSE
    assert conn.state() == CtState.CLOSING
    conn.out(TCP_SYN)  # a fresh SYN on the closed tuple is a new connection
    (reopen,) = events(conn.node)
    assert reopen.event_type == EventType.POLICY_VERDICT


def test_a_first_packet_fin_is_a_half_close(conn):
    conn.out(FIN_ACK)  # mid-stream pickup of a connection one side is closing
    assert conn.state() == CtState.ESTABLISHED
    conn.back(FIN_ACK)
    assert conn.state() == CtState.CLOSING
