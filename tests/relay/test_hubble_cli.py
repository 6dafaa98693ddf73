"""The real hubble CLI against the relay: observe, list nodes, status (marked lab: the CLI is
built from Go)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from relay_helpers import (  # type: ignore[import-not-found]
    Agents,
    Certificates,
    RunningRelay,
    boot_ns,
    flow_event,
    relay_config,
    run_hubble,
)

from septum.relay.server import RelayConfig, ServerTLS

pytestmark = pytest.mark.lab
StartRelay = Callable[[RelayConfig], RunningRelay]
MS = 1_000_000


@pytest.fixture
def two_agent_relay(agents: Agents, start_relay: StartRelay) -> RunningRelay:
    a = agents.start("node-a")
    b = agents.start("node-b")
    t0 = boot_ns() - 100 * MS
    a.push(*(flow_event(t0 + 2 * i * MS, 1000 + 2 * i) for i in range(8)))
    b.push(*(flow_event(t0 + (2 * i + 1) * MS, 1001 + 2 * i) for i in range(8)))
    return start_relay(relay_config([a.address, b.address]))


def test_hubble_observe_last_reads_the_merged_newest_flows(
    hubble: Path, tmp_path: Path, two_agent_relay: RunningRelay
) -> None:
    out = run_hubble(
        hubble,
        tmp_path,
        "observe",
        "--server",
        two_agent_relay.target,
        "--last",
        "10",
        "-o",
        "json",
    )
    assert out.returncode == 0, out.stderr
    flows = [json.loads(line)["flow"] for line in out.stdout.splitlines() if '"flow"' in line]
    assert [f["l4"]["TCP"]["source_port"] for f in flows] == list(range(1006, 1016))
    assert {f["node_name"] for f in flows} == {"node-a", "node-b"}


def test_hubble_list_nodes_and_status_per_node(
    hubble: Path, tmp_path: Path, two_agent_relay: RunningRelay
) -> None:
    nodes = run_hubble(hubble, tmp_path, "list", "nodes", "--server", two_agent_relay.target)
    assert nodes.returncode == 0, nodes.stderr
    rows = [line.split() for line in nodes.stdout.splitlines()[1:]]
    assert [(row[0], row[1]) for row in rows] == [("node-a", "Connected"), ("node-b", "Connected")]
    status = run_hubble(hubble, tmp_path, "status", "--server", two_agent_relay.target)
    assert status.returncode == 0, status.stderr
    assert "Healthcheck (via" in status.stdout
    assert "Current/Max Flows: 16/8,190" in status.stdout
    assert "Connected Nodes: 2/2" in status.stdout


def test_hubble_status_over_tls_to_the_relay(
    hubble: Path,
    tmp_path: Path,
    agents: Agents,
    start_relay: StartRelay,
    certificates: Certificates,
) -> None:
    a = agents.start("node-a")
    relay = start_relay(
        relay_config(
            [a.address],
            insecure=False,
            server_tls=ServerTLS(certificates.agent_cert, certificates.agent_key),
        )
    )
    status = run_hubble(
        hubble,
        tmp_path,
        "status",
        "--server",
        relay.target,
        "--tls",
        "--tls-ca-cert-files",
        str(certificates.ca),
        "--tls-server-name",
        "localhost",
    )
    assert status.returncode == 0, status.stderr
    assert "Connected Nodes: 1/1" in status.stdout
