"""How `septum bench datapath` names the full-path reports of a connection's packets."""

from __future__ import annotations

import dataclasses

from septum.bench.connaccount import ConnectionCost, event_kind
from septum.dataplane import abi
from septum.dataplane.events import Flow

_ZERO = {
    field.name: ("" if field.type == "str" else False if field.type == "bool" else 0)
    for field in dataclasses.fields(Flow)
}


def _flow(**fields: object) -> Flow:
    return Flow(**{**_ZERO, "verdict": abi.Verdict.FORWARDED, **fields})  # type: ignore[arg-type]


def test_a_connections_packets_are_named_by_direction_reply_flags_and_close() -> None:
    egress, ingress = abi.TrafficDirection.EGRESS, abi.TrafficDirection.INGRESS
    assert event_kind(_flow(direction=egress, tcp_flags=0x02)) == "egress SYN"
    assert event_kind(_flow(direction=ingress, tcp_flags=0x12, is_reply=True)) == (
        "ingress reply SYN|ACK"
    )
    closing = _flow(direction=egress, tcp_flags=0x14, flags=abi.EVENT_F_CT_CLOSE)
    assert event_kind(closing) == "egress ACK|RST close"
    dropped = _flow(direction=ingress, tcp_flags=0x02, verdict=abi.Verdict.DROPPED)
    assert event_kind(dropped) == "ingress SYN dropped"


def test_per_connection_figures_take_the_statistics_clock_reads_out() -> None:
    cost = ConnectionCost(connections=10, run_time_ns=10_000, runs=80, stats_ns_per_run=50.0)
    assert cost.runs_per_connection == 8.0
    assert cost.ns_per_connection == (10_000 - 80 * 50) / 10
    assert (
        ConnectionCost(connections=0, run_time_ns=5, runs=1, stats_ns_per_run=0).ns_per_connection
        == 0
    )
