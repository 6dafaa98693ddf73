"""The agent's flow ingest as `septum bench datapath` attaches it during Septum's
connection-rate runs: every event the datapath sends reaches the agent's flow ring, and
the rate ratio is the median of the per-round ratios."""

from __future__ import annotations

import os

import pytest

from septum.bench.agentingest import agent_ingest, agent_ingest_process
from septum.bench.datapath import ConnectionRates
from septum.dataplane import abi
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.packets import tcp4

PACKET = tcp4("10.99.2.1", "10.99.2.2", 42000, 80)


@pytest.mark.privileged
def test_every_event_sent_while_attached_is_ingested() -> None:
    node = NodeDatapath(DatapathConfig(node_name=f"t-agentingest-{os.getpid()}"))
    try:
        with agent_ingest(node, "t-agentingest") as ingest:
            for _ in range(50):  # one event per run, as a connection's packets send them
                node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=1)
            node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=950)
        assert ingest.ingested == 1000
        assert ingest.ring.head == 1000
        assert node.lost_events() == 0
        assert node.flow_reader().pending_bytes() == 0
    finally:
        node.teardown()


@pytest.mark.privileged
def test_the_ingest_process_takes_every_event_and_reports_the_count() -> None:
    node = NodeDatapath(DatapathConfig(node_name=f"t-agentingestp-{os.getpid()}"))
    try:
        with agent_ingest_process(node, "t-agentingestp") as count:
            for _ in range(50):
                node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=1)
            node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=950)
        assert count.ingested == 1000
        assert count.cpu_s > 0
        assert node.lost_events() == 0
        assert node.flow_reader().pending_bytes() == 0  # the process read the node's ring
    finally:
        node.teardown()


def test_the_rate_ratio_is_the_median_of_the_rounds() -> None:
    rates = ConnectionRates(
        septum=[110.0, 90.0, 130.0],
        iptables=[100.0, 100.0, 100.0],
        ingested=0,
        lost=0,
        septum_no_reader=[120.0, 200.0, 50.0],
    )
    assert rates.ratio == 1.1
    assert rates.no_reader_ratio == 1.2
