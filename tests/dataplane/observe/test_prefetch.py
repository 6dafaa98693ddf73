"""GetFlows messages built ahead by a helper thread: same messages, same order, clean ends."""

from __future__ import annotations

import threading
import time

import observe_helpers as h
import pytest
from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.prefetch import stream_flows_prefetched
from septum.dataplane.observe.query import FlowQuery, stream_flows_blocking
from septum.dataplane.observe.ring import FlowRing
from septum.dataplane.observe.wire import decode_response


def ring_with(count: int, capacity: int = 4095) -> FlowRing:
    ring = FlowRing(h.decoder(), capacity)
    base = h.boot_ns() - count * 1_000
    ring.extend(
        r.EVENT.unpack(h.event(time_ns=base + i * 1_000, src_port=10000 + i)) for i in range(count)
    )
    return ring


def query(**fields: object) -> FlowQuery:
    return FlowQuery.from_request(observer_pb2.GetFlowsRequest(**fields))  # type: ignore[arg-type]


def builders() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "getflows-build"]


def wait_no_builders(deadline_s: float = 5.0) -> None:
    deadline = time.monotonic() + deadline_s
    while builders() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not builders(), f"builder threads still running: {builders()}"


def always() -> bool:
    return True


def test_same_messages_in_the_same_order_as_the_direct_stream() -> None:
    ring = ring_with(1000)
    direct = list(stream_flows_blocking(ring, query(), h.NODE, always))
    built = list(stream_flows_prefetched(ring, query(), h.NODE, always, high_water=8, low_water=2))
    assert built == direct and len(built) == 1000
    wait_no_builders()


def test_number_and_first_limits_hold() -> None:
    ring = ring_with(50)
    out = list(stream_flows_prefetched(ring, query(number=5, first=True), h.NODE, always))
    assert [decode_response(m).flow.l4.TCP.source_port for m in out] == [
        10000,
        10001,
        10002,
        10003,
        10004,
    ]
    wait_no_builders()


def test_follower_gets_new_flows_and_the_builder_ends_when_the_consumer_leaves() -> None:
    ring = ring_with(3)
    stream = stream_flows_prefetched(ring, query(follow=True), h.NODE, always, 4, 1)
    first = [next(stream) for _ in range(3)]
    assert len(first) == 3
    ring.extend([r.EVENT.unpack(h.event(src_port=20000))])
    assert decode_response(next(stream)).flow.l4.TCP.source_port == 20000
    stream.close()  # what grpcio does when the client cancels
    wait_no_builders()


def test_builder_stops_when_the_client_is_gone() -> None:
    ring = ring_with(100)
    active = threading.Event()
    active.set()
    stream = stream_flows_prefetched(ring, query(follow=True), h.NODE, active.is_set, 4, 1)
    next(stream)
    active.clear()
    assert len(list(stream)) < 100  # ends (what was already built may still go out)
    wait_no_builders()


def test_ring_close_ends_a_follower() -> None:
    ring = ring_with(2)
    stream = stream_flows_prefetched(ring, query(follow=True), h.NODE, always)
    assert len([next(stream), next(stream)]) == 2
    ring.close()
    assert list(stream) == []
    wait_no_builders()


def test_builder_errors_reach_the_consumer() -> None:
    ring = ring_with(5)

    def broken_decode(rec: object, seq: int) -> object:
        raise RuntimeError("decoder exploded")

    ring.decoder.decode = broken_decode  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="decoder exploded"):
        list(stream_flows_prefetched(ring, query(), h.NODE, always))
    wait_no_builders()


def test_water_marks_are_checked() -> None:
    with pytest.raises(ValueError, match="low_water < high_water"):
        list(stream_flows_prefetched(ring_with(1), query(), h.NODE, always, 4, 4))
