"""Conntrack garbage collection: `NodeDatapath.jiffies()` reads the datapath's own clock,
and `gc_conntrack()` removes the entries whose deadline passed, in both tables, and
nothing else."""

from __future__ import annotations

import socket
import time

import pytest

from septum.dataplane import abi
from septum.dataplane.kernelhz import kernel_hz
from septum.dataplane.packets import TCP_ACK, TCP_SYN, tcp4, tcp6, udp4

from .conftest import POD_IP, POD_IP6, TESTRUN_IFINDEX

pytestmark = pytest.mark.privileged

SHORT_S, LONG_S = 1, 3600


def _config(syn_s: int, established_s: int, other_s: int) -> abi.Config:
    return abi.Config(
        ct_timeout_tcp_syn_s=syn_s,
        ct_timeout_tcp_established_s=established_s,
        ct_timeout_tcp_close_s=10,
        ct_timeout_other_s=other_s,
        drop_event_interval_ms=1000,
    )


@pytest.fixture
def node(testrun_node):
    testrun_node.write_config(_config(SHORT_S, LONG_S, SHORT_S))
    try:
        yield testrun_node
    finally:
        testrun_node.write_config(_config(60, 21600, 60))


def _send(node, packet: bytes) -> None:
    assert node.test_run(abi.PROG_FROM_POD, packet, ifindex=TESTRUN_IFINDEX).retval == 0


def _flows(node) -> set[int]:
    """The client port of every entry of the test endpoint (each test flow has its own)."""
    ports = set()
    for key, _ in node.conntrack():
        if key.ifindex == TESTRUN_IFINDEX:
            ports |= {socket.ntohs(key.sport_be), socket.ntohs(key.dport_be)}
    return ports - {53, 443}


def test_jiffies_is_the_clock_of_conntrack_deadlines(node):
    before = node.jiffies()
    _send(node, tcp4(POD_IP, "10.52.0.1", 40200, 443, TCP_ACK))  # mid-stream: ESTABLISHED
    after = node.jiffies()
    assert 0 < before <= after
    [entry] = [e for k, e in node.conntrack() if k.ifindex == TESTRUN_IFINDEX]
    stamped = entry.expires - LONG_S * kernel_hz()
    assert before <= stamped <= after


def test_gc_removes_expired_entries_of_both_tables_and_keeps_live_ones(node):
    _send(node, udp4(POD_IP, "10.52.0.2", 40201, 53))  # NEW, other timeout: 1 s
    _send(node, tcp6(POD_IP6, "fd00:52::2", 40202, 443, TCP_SYN))  # SYN_SENT: 1 s
    _send(node, tcp4(POD_IP, "10.52.0.3", 40203, 443, TCP_ACK))  # ESTABLISHED: 1 h
    assert _flows(node) == {40201, 40202, 40203}
    assert node.gc_conntrack() == 0  # nothing has expired yet

    time.sleep(SHORT_S + 0.3)  # let the short deadlines pass (jiffies run at HZ)

    assert node.gc_conntrack() == 2
    assert _flows(node) == {40203}
    assert node.gc_conntrack() == 0
