"""The relay's merge, pure: order across nodes, the lag bound, the buffer bound, history cuts,
and the message walk it relies on."""

from __future__ import annotations

import pytest

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.wire import encode_flow_response, encode_lost_response
from septum.relay import messages
from septum.relay.merge import Item, SortBuffer, merge_history

MS = 1_000_000


def flow(time_ns: int, node: str = "n1") -> bytes:
    f = flow_pb2.Flow(node_name=node)
    f.time.FromNanoseconds(time_ns)
    return encode_flow_response(f, node)


def test_scan_reads_kind_and_time_of_every_response_kind() -> None:
    assert messages.scan(flow(1_700_000_000_123_456_789)) == (
        messages.FLOW,
        1_700_000_000_123_456_789,
    )
    lost = encode_lost_response(flow_pb2.HUBBLE_RING_BUFFER, 7, 5, 9_000_000_001, "n1")
    assert messages.scan(lost) == (messages.LOST_EVENTS, 9_000_000_001)
    assert messages.lost_count(lost) == (flow_pb2.HUBBLE_RING_BUFFER, 7)
    status = messages.node_status(2, ["n2"], "gone", 42)
    assert messages.scan(status) == (messages.NODE_STATUS, 42)
    decoded = observer_pb2.GetFlowsResponse.FromString(status)
    assert list(decoded.node_status.node_names) == ["n2"]


def test_scan_does_not_depend_on_field_order() -> None:
    # time first, then node_name, then the flow: any sender's order reads the same
    response = observer_pb2.GetFlowsResponse(node_name="x")
    response.time.FromNanoseconds(3 * 10**9 + 5)
    reordered = response.SerializeToString() + b"\x0a\x00"
    assert messages.scan(reordered) == (messages.FLOW, 3 * 10**9 + 5)


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\xca", b"\x0f"])
def test_scan_refuses_broken_messages(data: bytes) -> None:
    with pytest.raises(messages.MessageError):
        messages.scan(data)


def drain_times(buffer: SortBuffer, now_ns: int) -> list[int]:
    return [messages.scan(data)[1] for data in buffer.pop_ready(now_ns)]


def test_follow_merge_orders_across_nodes_once_every_node_has_moved_past() -> None:
    buffer = SortBuffer(lag_ns=100 * MS, max_len=100)
    buffer.open("a")
    buffer.open("b")
    for t in (10, 30, 50):
        buffer.push("a", t, flow(t), now_ns=0)
    assert drain_times(buffer, 0) == []  # b has sent nothing: a's flows wait for it
    for t in (20, 40):
        buffer.push("b", t, flow(t), now_ns=1)
    # b reached 40: everything up to 40 is in order; 50 waits for b to move past it
    assert drain_times(buffer, 1) == [10, 20, 30, 40]
    buffer.push("b", 60, flow(60), now_ns=2)
    assert drain_times(buffer, 2) == [50]
    assert buffer.stats.late == 0


def test_an_idle_node_holds_the_others_back_at_most_the_lag() -> None:
    buffer = SortBuffer(lag_ns=100 * MS, max_len=100)
    buffer.open("busy")
    buffer.open("idle")
    buffer.push("busy", 5, flow(5), now_ns=0)
    buffer.push("busy", 6, flow(6), now_ns=10 * MS)
    assert buffer.next_due_ns() == 100 * MS
    assert drain_times(buffer, 99 * MS) == []
    assert drain_times(buffer, 100 * MS) == [5]
    assert drain_times(buffer, 110 * MS) == [6]


def test_a_closed_stream_no_longer_holds_anything_back() -> None:
    buffer = SortBuffer(lag_ns=10**12, max_len=100)
    buffer.open("a")
    buffer.open("b")
    buffer.push("a", 1, flow(1), now_ns=0)
    assert drain_times(buffer, 0) == []
    buffer.close("b")
    assert drain_times(buffer, 0) == [1]


def test_a_full_buffer_forces_the_oldest_out_and_never_drops() -> None:
    buffer = SortBuffer(lag_ns=10**12, max_len=3)
    buffer.open("a")
    buffer.open("silent")
    for t in (3, 1, 2):
        buffer.push("a", t, flow(t), now_ns=0)
    assert buffer.full
    assert drain_times(buffer, 0) == [1]  # one out: room for the reader again
    assert not buffer.full
    assert buffer.stats.forced == 1
    assert [messages.scan(d)[1] for d in buffer.drain()] == [2, 3]
    assert buffer.stats.sent == 3


def test_a_message_older_than_one_sent_leaves_at_once_counted_late() -> None:
    buffer = SortBuffer(lag_ns=0, max_len=10)
    buffer.open("a")
    buffer.push("a", 50, flow(50), now_ns=0)
    assert drain_times(buffer, 0) == [50]
    buffer.push("a", 40, flow(40), now_ns=1)
    assert drain_times(buffer, 1) == [40]
    assert buffer.stats.late == 1


def test_lost_events_pass_through_in_time_order() -> None:
    buffer = SortBuffer(lag_ns=0, max_len=10)
    buffer.open("a")
    lost = encode_lost_response(flow_pb2.HUBBLE_RING_BUFFER, 12, 15, 15, "a")
    buffer.push("a", 10, flow(10), now_ns=0)
    buffer.push("a", 15, lost, now_ns=0)
    buffer.push("a", 20, flow(20), now_ns=0)
    out = buffer.pop_ready(1)
    assert [messages.scan(d)[0] for d in out] == [
        messages.FLOW,
        messages.LOST_EVENTS,
        messages.FLOW,
    ]
    assert messages.lost_count(out[1]) == (flow_pb2.HUBBLE_RING_BUFFER, 12)


def test_sort_buffer_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="sort buffer length"):
        SortBuffer(lag_ns=0, max_len=0)


def items(node: str, *times: int, kind: int = messages.FLOW) -> list[Item]:
    return [Item(node, kind, t, flow(t, node)) for t in times]


def test_history_merges_by_time_and_keeps_the_newest_or_oldest_number() -> None:
    a = items("a", 1, 4, 5)
    b = items("b", 2, 3, 6)
    assert [i.time_ns for i in merge_history([a, b], 0, False)] == [1, 2, 3, 4, 5, 6]
    assert [i.time_ns for i in merge_history([a, b], 3, False)] == [4, 5, 6]
    assert [(i.node, i.time_ns) for i in merge_history([a, b], 2, True)] == [("a", 1), ("b", 2)]
    assert len(merge_history([a, b], 10, False)) == 6


def test_history_counts_only_flows_against_number() -> None:
    a = items("a", 1, 5)
    lost = items("a", 4, kind=messages.LOST_EVENTS)
    kept = merge_history([a, lost, items("b", 3)], 1, False)
    assert [(i.kind, i.time_ns) for i in kept] == [(messages.FLOW, 5)]
    kept = merge_history([a, lost, items("b", 3)], 2, False)
    assert [(i.kind, i.time_ns) for i in kept] == [
        (messages.FLOW, 3),
        (messages.LOST_EVENTS, 4),
        (messages.FLOW, 5),
    ]
