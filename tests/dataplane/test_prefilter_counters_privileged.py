"""The XDP prefilter counts only what it drops: the per-CPU counters have no hook
dimension, so a packet it passes on to a pod is counted once, by the pod's hook, and frames
no pod sees (non-IP, the node's own traffic) are not counted at all."""

from __future__ import annotations

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import DropReason, TrafficDirection, Verdict
from septum.dataplane.datapath import CounterKey
from septum.dataplane.packets import ETH_P_ARP, ether, tcp4, tcp6

from .conftest import FORWARDED, POD_IP, Runner

pytestmark = pytest.mark.privileged

XDP_DROP, XDP_PASS = 1, 2
DENIED, ALLOWED = "198.51.100.10", "203.0.113.10"


def packet_counts(node) -> dict[CounterKey, int]:
    return {key: value.packets for key, value in node.counters().items() if value.packets}


@pytest.fixture
def prefiltered(testrun_node):
    testrun_node.set_prefilter({"198.51.100.0/24": 77})
    try:
        yield testrun_node
    finally:
        testrun_node.set_prefilter([])


@pytest.mark.parametrize(
    "frame",
    [
        tcp4(ALLOWED, POD_IP, 40000, 80),
        tcp6("2001:db8::10", "fd00:99::1", 40000, 80),
        ether(bytes(28), ETH_P_ARP),
        ether(bytes(46), 0x88CC),  # LLDP: no IP at all
    ],
    ids=["ipv4", "ipv6", "arp", "lldp"],
)
def test_a_passed_frame_is_not_counted(prefiltered, frame):
    before = packet_counts(prefiltered)
    assert prefiltered.test_run(abi.PROG_XDP_PREFILTER, frame).retval == XDP_PASS
    assert packet_counts(prefiltered) == before


def test_an_uplink_to_pod_packet_is_counted_once(prefiltered):
    frame = tcp4(ALLOWED, POD_IP, 40000, 80)
    before = packet_counts(prefiltered)
    assert prefiltered.test_run(abi.PROG_XDP_PREFILTER, frame).retval == XDP_PASS
    assert Runner(prefiltered).outcome(frame, abi.PROG_TO_POD) == FORWARDED
    after = packet_counts(prefiltered)
    key = CounterKey(TrafficDirection.INGRESS, Verdict.FORWARDED, DropReason.NONE)
    assert after[key] - before.get(key, 0) == 1


def test_a_prefilter_drop_is_counted(prefiltered):
    before = packet_counts(prefiltered)
    frame = tcp4(DENIED, POD_IP, 40000, 80)
    assert prefiltered.test_run(abi.PROG_XDP_PREFILTER, frame).retval == XDP_DROP
    after = packet_counts(prefiltered)
    moved = {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key)}
    key = CounterKey(TrafficDirection.INGRESS, Verdict.DROPPED, DropReason.PREFILTER_DENIED)
    assert moved == {key: 1}
