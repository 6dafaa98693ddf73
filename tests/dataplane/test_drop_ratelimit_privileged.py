"""Drop-event rate limit: the per-CPU cache of the last dropped flow loses no suppressed
drop, also when another flow interrupts it on the same CPU."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from septum.dataplane import abi
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.events import Flow
from septum.dataplane.packets import tcp4
from septum.dataplane.policy import EndpointPolicy

pytestmark = pytest.mark.privileged
IFINDEX = 1
FLOW_A = tcp4("10.98.0.1", "10.98.0.2", 40000, 80)
FLOW_B = tcp4("10.98.0.1", "10.98.0.2", 40001, 80)


@pytest.fixture
def denying_node(node_name: str) -> Iterator[NodeDatapath]:
    """Every egress packet of the endpoint drops (POLICY_DENIED); 20 ms drop interval. The
    process is pinned to one CPU, so every test run shares one per-CPU cache."""
    affinity = os.sched_getaffinity(0)
    node = NodeDatapath(DatapathConfig(node_name=node_name, drop_event_interval_ms=20))
    try:
        os.sched_setaffinity(0, {min(affinity)})
        node.upsert_endpoint(
            EndpointSpec(1, IFINDEX, 5001, ipv4="10.98.0.1", check_source=False, attach=False)
        )
        node.replace_policy(1, EndpointPolicy(enforce_egress=True))
        yield node
    finally:
        os.sched_setaffinity(0, affinity)
        node.teardown()


def _drop(node: NodeDatapath, packet: bytes) -> None:
    assert node.test_run(abi.PROG_FROM_POD, packet, ifindex=IFINDEX).retval == 2  # TC_ACT_SHOT


def _drops_of(flows: list[Flow], sport: int) -> list[Flow]:
    return [f for f in flows if f.src_port == sport and f.verdict == abi.Verdict.DROPPED]


def test_suppressed_drops_survive_an_interrupting_flow(denying_node):
    node = denying_node
    flows: list[Flow] = []
    sent_a = 0
    for packet in (FLOW_A, FLOW_A, FLOW_A, FLOW_B, FLOW_A, FLOW_A):
        _drop(node, packet)
        sent_a += packet is FLOW_A
    flows += node.read_flows()
    assert len(_drops_of(flows, 40000)) == 1 and len(_drops_of(flows, 40001)) == 1
    # keep dropping flow A until its interval is over and it reports again
    deadline = time.monotonic() + 10
    while len(_drops_of(flows, 40000)) < 2:
        assert time.monotonic() < deadline, f"no second drop event of flow A: {flows}"
        _drop(node, FLOW_A)
        sent_a += 1
        flows += node.read_flows()
    reported = _drops_of(flows, 40000)
    # every drop of flow A is either an event or counted in the next event's suppressed
    assert sum(1 + f.suppressed_drops for f in reported) == sent_a, reported
    assert reported[1].suppressed_drops >= 4
