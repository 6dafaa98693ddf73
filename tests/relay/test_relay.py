"""The relay over real gRPC: two agents' Observers on localhost ports, one relay in front."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from relay_helpers import (  # type: ignore[import-not-found]
    BACKEND,
    FRONTEND,
    VERDICT_DROPPED,
    Agents,
    RunningRelay,
    boot_ns,
    flow_event,
    poll,
    relay_config,
)

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.relay import relay_pb2
from septum.relay.errors import RelayConfigError
from septum.relay.server import RelayConfig

StartRelay = Callable[[RelayConfig], RunningRelay]
MS = 1_000_000


def interleaved(agents: Agents) -> tuple[object, object]:
    """Two agents whose flows alternate in time: a at 0, 2, 4 ... ms, b at 1, 3, 5 ... ms."""
    a = agents.start("node-a")
    b = agents.start("node-b")
    t0 = boot_ns() - 50 * MS
    a.push(*(flow_event(t0 + 2 * i * MS, 1000 + 2 * i) for i in range(5)))
    b.push(*(flow_event(t0 + (2 * i + 1) * MS, 1001 + 2 * i) for i in range(5)))
    return a, b


def flows_of(responses: object) -> list[tuple[str, int]]:
    return [
        (r.node_name, r.flow.l4.TCP.source_port)
        for r in responses  # type: ignore[attr-defined]
        if r.HasField("flow")
    ]


def test_history_is_merged_in_time_order_across_agents(
    agents: Agents, start_relay: StartRelay
) -> None:
    a, b = interleaved(agents)
    relay = start_relay(relay_config([a.address, b.address]))  # type: ignore[attr-defined]
    responses = list(relay.stub().GetFlows(observer_pb2.GetFlowsRequest(), timeout=10))
    assert [port for _, port in flows_of(responses)] == list(range(1000, 1010))
    assert {node for node, _ in flows_of(responses)} == {"node-a", "node-b"}
    status = [r.node_status for r in responses if r.HasField("node_status")]
    assert status[0].state_change == relay_pb2.NODE_CONNECTED
    assert sorted(status[0].node_names) == ["node-a", "node-b"]
    times = [r.time.ToNanoseconds() for r in responses if r.HasField("flow")]
    assert times == sorted(times)
    last = list(relay.stub().GetFlows(observer_pb2.GetFlowsRequest(number=3), timeout=10))
    assert [port for _, port in flows_of(last)] == [1007, 1008, 1009]
    first = list(
        relay.stub().GetFlows(observer_pb2.GetFlowsRequest(number=3, first=True), timeout=10)
    )
    assert [port for _, port in flows_of(first)] == [1000, 1001, 1002]


def test_filters_reach_every_agent(agents: Agents, start_relay: StartRelay) -> None:
    a = agents.start("node-a")
    b = agents.start("node-b")
    t0 = boot_ns() - 50 * MS
    a.push(flow_event(t0, 2000), flow_event(t0 + 2 * MS, 2002, VERDICT_DROPPED))
    b.push(flow_event(t0 + 1 * MS, 2001, VERDICT_DROPPED), flow_event(t0 + 3 * MS, 2003))
    relay = start_relay(relay_config([a.address, b.address]))
    dropped = observer_pb2.GetFlowsRequest(
        whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
    )
    responses = list(relay.stub().GetFlows(dropped, timeout=10))
    assert flows_of(responses) == [("node-b", 2001), ("node-a", 2002)]
    by_pod = observer_pb2.GetFlowsRequest(
        whitelist=[flow_pb2.FlowFilter(source_pod=[f"{FRONTEND.namespace}/{FRONTEND.pod_name}"])],
        blacklist=[flow_pb2.FlowFilter(source_port=["2000"])],
    )
    assert [p for _, p in flows_of(relay.stub().GetFlows(by_pod, timeout=10))] == [
        2001,
        2002,
        2003,
    ]
    wrong_pod = observer_pb2.GetFlowsRequest(
        whitelist=[flow_pb2.FlowFilter(destination_pod=[f"other/{BACKEND.pod_name}"])]
    )
    assert flows_of(relay.stub().GetFlows(wrong_pod, timeout=10)) == []


def test_a_filter_the_agents_refuse_is_the_clients_error(
    agents: Agents, start_relay: StartRelay
) -> None:
    a = agents.start("node-a")
    relay = start_relay(relay_config([a.address]))
    bad = observer_pb2.GetFlowsRequest(whitelist=[flow_pb2.FlowFilter(source_ip=["not-an-ip"])])
    with pytest.raises(grpc.RpcError) as err:
        list(relay.stub().GetFlows(bad, timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class Follower:
    """A following GetFlows call read on a thread."""

    def __init__(self, relay: RunningRelay, request: observer_pb2.GetFlowsRequest) -> None:
        self.call = relay.stub().GetFlows(request, timeout=30)
        self.responses: list[observer_pb2.GetFlowsResponse] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for response in self.call:
                self.responses.append(response)
        except grpc.RpcError:
            pass

    def ports(self) -> list[int]:
        return [port for _, port in flows_of(list(self.responses))]

    def statuses(self) -> list[tuple[int, list[str]]]:
        return [
            (r.node_status.state_change, list(r.node_status.node_names))
            for r in list(self.responses)
            if r.HasField("node_status")
        ]

    def close(self) -> None:
        self.call.cancel()
        self.thread.join(5)


def test_follow_merges_live_flows_and_history(agents: Agents, start_relay: StartRelay) -> None:
    a, b = interleaved(agents)
    relay = start_relay(relay_config([a.address, b.address]))  # type: ignore[attr-defined]
    follower = Follower(relay, observer_pb2.GetFlowsRequest(follow=True, number=2))
    try:
        poll("history", lambda: follower.ports() == [1008, 1009] or follower.ports())
        now = boot_ns()
        a.push(flow_event(now, 3000))  # type: ignore[attr-defined]
        b.push(flow_event(now + 1 * MS, 3001))  # type: ignore[attr-defined]
        a.push(flow_event(now + 2 * MS, 3002))  # type: ignore[attr-defined]
        poll(
            "live flows in time order",
            lambda: follower.ports() == [1008, 1009, 3000, 3001, 3002] or follower.ports(),
        )
    finally:
        follower.close()


def test_status_and_nodes_per_node_and_an_agent_that_leaves_and_returns(
    agents: Agents, start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="septum.relay")
    a, b = interleaved(agents)
    relay = start_relay(relay_config([a.address, b.address]))  # type: ignore[attr-defined]
    nodes = relay.nodes()
    assert {name: n.state for name, n in nodes.items()} == {
        "node-a": relay_pb2.NODE_CONNECTED,
        "node-b": relay_pb2.NODE_CONNECTED,
    }
    assert nodes["node-a"].num_flows == 5 and nodes["node-a"].seen_flows == 5
    assert nodes["node-b"].max_flows == 4095
    assert nodes["node-a"].address == a.address  # type: ignore[attr-defined]
    status = relay.stub().ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
    assert (status.num_flows, status.seen_flows, status.max_flows) == (10, 10, 2 * 4095)
    assert status.num_connected_nodes.value == 2 and status.num_unavailable_nodes.value == 0

    follower = Follower(relay, observer_pb2.GetFlowsRequest(follow=True))
    try:
        poll("the rings' flows", lambda: len(follower.ports()) == 10 or follower.ports())
        port = int(b.address.rsplit(":", 1)[1])  # type: ignore[attr-defined]
        b.stop()  # type: ignore[attr-defined]
        poll(
            "node-b unavailable in GetNodes",
            lambda: (
                relay.nodes()["node-b"].state == relay_pb2.NODE_UNAVAILABLE
                or relay.nodes()["node-b"].state
            ),
        )
        status = relay.stub().ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
        assert list(status.unavailable_nodes) == ["node-b"]
        assert status.num_flows == 5
        # The relay keeps serving: history from the agent still there, the follower goes on.
        history = list(relay.stub().GetFlows(observer_pb2.GetFlowsRequest(), timeout=10))
        assert {n for n, _ in flows_of(history)} == {"node-a"}
        unavailable = [r.node_status for r in history if r.HasField("node_status")][-1]
        assert unavailable.state_change == relay_pb2.NODE_UNAVAILABLE
        assert list(unavailable.node_names) == ["node-b"]
        a.push(flow_event(boot_ns(), 4000))  # type: ignore[attr-defined]
        poll("a's flow while b is away", lambda: 4000 in follower.ports() or follower.ports())
        assert (relay_pb2.NODE_UNAVAILABLE, ["node-b"]) in follower.statuses()

        back = agents.start("node-b", port=port)
        poll(
            "node-b connected again",
            lambda: (
                relay.nodes()["node-b"].state == relay_pb2.NODE_CONNECTED
                or relay.nodes()["node-b"].state
            ),
        )
        poll(
            "the follower told node-b is back",
            lambda: (
                follower.statuses().count((relay_pb2.NODE_CONNECTED, ["node-b"])) == 1
                or follower.statuses()
            ),
        )
        back.push(flow_event(boot_ns(), 4001))
        poll("b's flow after it returned", lambda: 4001 in follower.ports() or follower.ports())
        assert len(follower.ports()) == len(set(follower.ports()))  # nothing repeated
    finally:
        follower.close()
    assert "peer node-b unavailable" in caplog.text


def test_lost_events_of_a_follower_the_agent_overran_reach_the_client(
    agents: Agents, start_relay: StartRelay
) -> None:
    small = agents.start("node-a", capacity=16)
    relay = start_relay(relay_config([small.address]))
    follower = Follower(relay, observer_pb2.GetFlowsRequest(follow=True))
    try:
        poll("connected status", lambda: bool(follower.statuses()) or follower.statuses())
        # More than the ring holds in one write: the agent's reader skips what was overwritten.
        now = boot_ns()
        small.push(*(flow_event(now + i, 5000 + i) for i in range(200)))
        poll("the last flow", lambda: 5199 in follower.ports() or follower.ports()[-3:])
        lost = [r.lost_events for r in follower.responses if r.HasField("lost_events")]
        delivered = len(follower.ports())
        assert sum(e.num_events_lost for e in lost) + delivered == 200
        assert all(e.source == flow_pb2.HUBBLE_RING_BUFFER for e in lost)
    finally:
        follower.close()
    stats = relay.thread.relay.observer.stats  # type: ignore[union-attr]
    assert stats.lost_by_source.get(flow_pb2.HUBBLE_RING_BUFFER, 0) > 0


def test_plaintext_and_its_warning_only_when_chosen(
    agents: Agents, start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    a = agents.start("node-a")
    with pytest.raises(RelayConfigError, match="--insecure-agents"):
        relay_config([a.address], insecure_agents=False).validate()
    with pytest.raises(RelayConfigError, match="--tls-cert"):
        relay_config([a.address], insecure=False).validate()
    with pytest.raises(RelayConfigError, match="--peer-service/--agent"):
        relay_config([]).validate()
    caplog.set_level(logging.INFO, logger="septum.relay")
    start_relay(relay_config([a.address]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("PLAINTEXT (--insecure-agents)" in w for w in warnings)
    assert any("PLAINTEXT (--insecure)" in w for w in warnings)


def test_seed_through_one_agents_peer_service(agents: Agents, start_relay: StartRelay) -> None:
    a = agents.start("node-a")
    relay = start_relay(relay_config([], peer_services=(a.address,)))
    poll("node-a known", lambda: list(relay.nodes()) == ["node-a"] or list(relay.nodes()))
    started = time.monotonic()
    assert relay.nodes()["node-a"].state == relay_pb2.NODE_CONNECTED
    assert time.monotonic() - started < 5
