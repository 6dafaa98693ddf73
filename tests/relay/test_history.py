"""Days of flows through the relay: each agent answers from its own store, the relay merges
(docs/architecture.md, "Where history lives"). Marked lab: the real hubble CLI is Go-built."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from relay_helpers import (  # type: ignore[import-not-found]
    VERDICT_DROPPED,
    VERDICT_FORWARDED,
    Agent,
    Agents,
    RunningRelay,
    boot_ns,
    flow_event,
    relay_config,
    run_hubble,
)

from septum.dataplane.observe.history import HistoryConfig, RetentionConfig, WriterConfig
from septum.relay.server import RelayConfig

pytestmark = pytest.mark.lab
StartRelay = Callable[[RelayConfig], RunningRelay]
MS = 1_000_000
RING = 16  # each agent's ring: far fewer flows than each pushes
FLOWS = 120  # per agent


def _history(directory: Path, node: str) -> HistoryConfig:
    # One process, one chDB engine on one directory: a database per node (the agents, each
    # a process of its own, have a directory each).
    return HistoryConfig(
        directory=directory,
        database=node.replace("-", "_"),
        writer=WriterConfig(flush_interval_s=0.05),
        retention=RetentionConfig(interval_s=3600, aggregate_after_s=None),
    )


def _fill(agent: Agent, t0: int, offset: int) -> list[int]:
    """FLOWS flows, every tenth dropped, interleaved in time with the other agent's;
    returns the source ports of the drops, oldest first."""
    drops = []
    for start in range(0, FLOWS, RING):
        batch = []
        for i in range(start, min(start + RING, FLOWS)):
            port = 10_000 + 2 * i + offset
            dropped = i % 10 == 0
            batch.append(
                flow_event(
                    t0 + (2 * i + offset) * MS,
                    port,
                    VERDICT_DROPPED if dropped else VERDICT_FORWARDED,
                )
            )
            if dropped:
                drops.append(port)
        agent.push(*batch)
    assert agent.node.history is not None
    assert agent.node.history.writer.flush(10)
    return drops


def test_hubble_reads_both_nodes_history_of_drops_through_the_relay(
    hubble: Path, tmp_path: Path, agents: Agents, start_relay: StartRelay
) -> None:
    a = agents.start("node-a", capacity=RING, history=_history(tmp_path, "node-a"))
    b = agents.start("node-b", capacity=RING, history=_history(tmp_path, "node-b"))
    t0 = boot_ns() - 10_000 * MS
    drops = sorted(_fill(a, t0, 0) + _fill(b, t0, 1))
    relay = start_relay(relay_config([a.address, b.address]))
    out = run_hubble(
        hubble, tmp_path, "observe", "--server", relay.target,
        "--since", "24h", "--verdict", "DROPPED", "-o", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    flows = [json.loads(line)["flow"] for line in out.stdout.splitlines() if line.strip()]
    # Every drop of both nodes (24 of 240 flows, while each ring holds 16), in time order.
    assert [f["l4"]["TCP"]["source_port"] for f in flows] == drops
    assert {f["node_name"] for f in flows} == {"node-a", "node-b"}
    assert {f["verdict"] for f in flows} == {"DROPPED"}
    # --first reaches the oldest stored flows of the two nodes, merged.
    out = run_hubble(
        hubble, tmp_path, "observe", "--server", relay.target, "--first", "4", "-o", "json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    first = [json.loads(line)["flow"] for line in out.stdout.splitlines() if line.strip()]
    assert [f["l4"]["TCP"]["source_port"] for f in first] == [10_000, 10_001, 10_002, 10_003]
