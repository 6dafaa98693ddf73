"""GetFlows semantics over the ring: number/first, since/until, follow, lost events."""

from __future__ import annotations

import observe_helpers as h

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.filters import FlowSelection
from septum.dataplane.observe.query import CaughtUp, FlowQuery, stream_flows
from septum.dataplane.observe.ring import FlowRing
from septum.dataplane.observe.wire import decode_response


def ring_with(count: int, capacity: int = 4095, step_ns: int = 1_000_000) -> FlowRing:
    ring = FlowRing(h.decoder(), capacity)
    base = h.boot_ns() - count * step_ns
    ring.extend(
        r.EVENT.unpack(h.event(time_ns=base + i * step_ns, src_port=10000 + i))
        for i in range(count)
    )
    return ring


def answer(
    ring: FlowRing, request: observer_pb2.GetFlowsRequest
) -> list[observer_pb2.GetFlowsResponse]:
    out = []
    for item in stream_flows(ring, FlowQuery.from_request(request), h.NODE):
        if isinstance(item, CaughtUp):
            break
        out.append(decode_response(item))
    return out


def ports(responses: list[observer_pb2.GetFlowsResponse]) -> list[int]:
    return [resp.flow.l4.TCP.source_port - 10000 for resp in responses]


def test_last_n_in_order() -> None:
    ring = ring_with(10)
    assert ports(answer(ring, observer_pb2.GetFlowsRequest(number=3))) == [7, 8, 9]


def test_first_n() -> None:
    ring = ring_with(10)
    assert ports(answer(ring, observer_pb2.GetFlowsRequest(number=3, first=True))) == [0, 1, 2]


def test_number_zero_is_everything_held() -> None:
    assert ports(answer(ring_with(5), observer_pb2.GetFlowsRequest())) == [0, 1, 2, 3, 4]


def test_ring_keeps_the_last_capacity_events() -> None:
    ring = ring_with(10, capacity=4)
    assert len(ring) == 4 and ring.seen_flows == 10
    assert ports(answer(ring, observer_pb2.GetFlowsRequest())) == [6, 7, 8, 9]


def test_last_n_counts_only_matching_flows() -> None:
    ring = ring_with(10)
    request = observer_pb2.GetFlowsRequest(
        number=2, whitelist=[flow_pb2.FlowFilter(source_port=["10002", "10004", "10006"])]
    )
    assert ports(answer(ring, request)) == [4, 6]


def test_since_and_until() -> None:
    ring = ring_with(10)
    times = [resp.flow.time for resp in answer(ring, observer_pb2.GetFlowsRequest())]
    request = observer_pb2.GetFlowsRequest()
    request.since.CopyFrom(times[3])
    request.until.CopyFrom(times[6])
    assert ports(answer(ring, request)) == [3, 4, 5, 6]
    request.number = 2  # the last 2 inside the window
    assert ports(answer(ring, request)) == [5, 6]


def test_responses_carry_node_name_and_time() -> None:
    (resp,) = answer(ring_with(1), observer_pb2.GetFlowsRequest())
    assert resp.node_name == h.NODE and resp.time == resp.flow.time


def test_follow_continues_with_new_flows() -> None:
    ring = ring_with(2)
    stream = stream_flows(
        ring, FlowQuery.from_request(observer_pb2.GetFlowsRequest(follow=True)), h.NODE
    )
    got = [next(stream), next(stream)]
    assert isinstance(next(stream), CaughtUp)
    ring.extend([r.EVENT.unpack(h.event(src_port=10042))])
    got.append(next(stream))
    assert [decode_response(g).flow.l4.TCP.source_port for g in got] == [10000, 10001, 10042]  # type: ignore[arg-type]


def test_slow_follower_gets_exact_lost_counts() -> None:
    """produced = delivered + lost, with the loss reported in-stream (HUBBLE_RING_BUFFER)."""
    ring = FlowRing(h.decoder(), capacity=8)
    stream = stream_flows(
        ring, FlowQuery.from_request(observer_pb2.GetFlowsRequest(follow=True)), h.NODE
    )
    assert isinstance(next(stream), CaughtUp)
    produced = 0
    delivered = lost = 0
    lost_messages = 0
    for burst in (5, 50, 3, 1000, 8, 9):
        ring.extend(r.EVENT.unpack(h.event(src_port=i % 60000)) for i in range(burst))
        produced += burst
        for item in stream:
            if isinstance(item, CaughtUp):
                break
            resp = decode_response(item)  # type: ignore[arg-type]
            if resp.HasField("lost_events"):
                assert resp.lost_events.source == flow_pb2.HUBBLE_RING_BUFFER
                lost += resp.lost_events.num_events_lost
                lost_messages += 1
            else:
                delivered += 1
    assert produced == delivered + lost
    assert lost_messages == 3 and lost == (50 - 8) + (1000 - 8) + (9 - 8)
    assert ring.lost_by_source[flow_pb2.HUBBLE_RING_BUFFER] == lost


def test_upstream_loss_is_an_entry_in_the_stream() -> None:
    ring = ring_with(1)
    ring.add_lost(flow_pb2.PERF_EVENT_RING_BUFFER, 17)
    request = observer_pb2.GetFlowsRequest(
        whitelist=[flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
    )
    (resp,) = answer(ring, request)  # lost events pass every filter
    assert resp.lost_events.source == flow_pb2.PERF_EVENT_RING_BUFFER
    assert resp.lost_events.num_events_lost == 17


def test_decoded_flows_are_shared_between_readers() -> None:
    ring = ring_with(3)
    first = [
        bytes(x)
        for x in stream_flows(ring, FlowQuery.from_request(observer_pb2.GetFlowsRequest()), h.NODE)
    ]
    second = list(
        stream_flows(ring, FlowQuery.from_request(observer_pb2.GetFlowsRequest()), h.NODE)
    )
    assert all(a == b for a, b in zip(first, second, strict=True))
    assert all(
        x is y
        for x, y in zip(
            second,
            stream_flows(ring, FlowQuery(0, False, False, None, None, FlowSelection()), h.NODE),
            strict=True,
        )
    )
