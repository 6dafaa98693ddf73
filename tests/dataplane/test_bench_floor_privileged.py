"""`bench_new_floor`, the floor `septum bench datapath` prints under new_allow_ns, really
does the operations it stands for: it inserts the connection into the conntrack with the
deciding rule and the peer's identity, counts the packet and emits one event, and without
a policy entry for the peer it has nothing to insert.  (Its speed is the benchmark's
business, not a test's.)"""

from __future__ import annotations

import pytest

from septum.dataplane import abi
from septum.dataplane.abi import TrafficDirection, Verdict
from septum.dataplane.datapath import CounterKey
from septum.dataplane.events import decode_events
from septum.dataplane.packets import TCP_SYN, tcp4
from septum.dataplane.policy import EndpointPolicy, PolicyEntry

from .conftest import POD_IP, TESTRUN_ENDPOINT, TESTRUN_IFINDEX, with_prefixes

pytestmark = pytest.mark.privileged

PEER, PEER_IDENTITY, PORT, RULE = "10.51.0.7", 700, 8443, 42
PACKET = tcp4(POD_IP, PEER, 40100, PORT, TCP_SYN)


node = with_prefixes({f"{PEER}/32": PEER_IDENTITY})


def _forwarded_egress(node) -> int:
    key = CounterKey(TrafficDirection.EGRESS, Verdict.FORWARDED, abi.DropReason.NONE)
    value = node.counters().get(key)
    return value.packets if value else 0


def test_floor_inserts_counts_and_reports_the_connection(node):
    node.replace_policy(
        TESTRUN_ENDPOINT,
        EndpointPolicy(
            enforce_egress=True,
            entries=(PolicyEntry(TrafficDirection.EGRESS, PEER_IDENTITY, 6, PORT, rule_id=RULE),),
        ),
    )
    reader = node.flow_reader()
    reader.read_raw()
    counted = _forwarded_egress(node)

    result = node.test_run(abi.PROG_BENCH_NEW_FLOOR, PACKET, ifindex=TESTRUN_IFINDEX)

    assert result.retval == 0  # TC_ACT_OK
    entries = [entry for key, entry in node.conntrack() if key.ifindex == TESTRUN_IFINDEX]
    assert [(e.rule_id, e.peer_identity) for e in entries] == [(RULE, PEER_IDENTITY)]
    assert _forwarded_egress(node) == counted + 1
    events = decode_events(reader.read_raw())
    assert [(e.flags, e.rule_id) for e in events] == [(abi.EVENT_F_BENCH, RULE)]
    assert events[0].time_ns > 0


def test_floor_without_a_policy_entry_inserts_nothing(node):
    node.replace_policy(TESTRUN_ENDPOINT, EndpointPolicy(enforce_egress=True, entries=()))
    result = node.test_run(abi.PROG_BENCH_NEW_FLOOR, PACKET, ifindex=TESTRUN_IFINDEX)
    assert result.retval == 2  # TC_ACT_SHOT
    assert [k for k, _ in node.conntrack() if k.ifindex == TESTRUN_IFINDEX] == []
