"""GetFlows past the ring: older flows come back in order, filtered, without gap or repeat."""

from __future__ import annotations

import threading
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from observe_helpers import DEATHSTAR, TIEFIGHTER, XWING, RunningObserver, event

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.filters import FlowSelection


def _since(seconds_ago: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(time.time_ns() - int(seconds_ago * 1e9))
    return stamp


def _flows(observer: RunningObserver, **request: object) -> list[flow_pb2.Flow]:
    responses = observer.stub().GetFlows(observer_pb2.GetFlowsRequest(**request), timeout=20)
    return [r.flow for r in responses if r.HasField("flow")]


def _ports(flows: list[flow_pb2.Flow]) -> list[int]:
    return [f.l4.TCP.source_port for f in flows]


def _fill(observer: RunningObserver, count: int, start_port: int = 1000) -> None:
    for i in range(0, count, 50):
        observer.push(*(event(src_port=start_port + j) for j in range(i, min(count, i + 50))))
    assert observer.node.history is not None
    assert observer.node.history.writer.flush(10)


def test_flows_older_than_the_ring_come_back_in_order(history_observer: RunningObserver) -> None:
    _fill(history_observer, 200)  # the ring holds 16
    flows = _flows(history_observer, since=_since(3600))
    assert _ports(flows) == list(range(1000, 1200))
    # The flows the ring still has are byte for byte the ring's (same uuid, same fields).
    ring_flows = _flows(history_observer, number=16)
    assert [f.SerializeToString() for f in flows[-16:]] == [
        f.SerializeToString() for f in ring_flows
    ]
    assert len({f.uuid for f in flows}) == 200
    assert flows[0].source.pod_name == XWING.pod_name
    assert flows[0].destination.pod_name == DEATHSTAR.pod_name


def test_first_and_last_reach_past_the_ring(history_observer: RunningObserver) -> None:
    _fill(history_observer, 100)
    assert _ports(_flows(history_observer, first=True, number=30)) == list(range(1000, 1030))
    assert _ports(_flows(history_observer, number=40)) == list(range(1060, 1100))


def test_filters_pushed_down_or_not_select_as_the_ring_does(
    history_observer: RunningObserver,
) -> None:
    events = []
    for i in range(120):
        src = (XWING, TIEFIGHTER)[i % 2]
        verdict = 2 if i % 3 == 0 else 1
        events.append(
            event(
                src, DEATHSTAR, src_port=2000 + i, verdict=verdict, drop_reason=133 * (verdict == 2)
            )
        )
    for i in range(0, 120, 40):
        history_observer.push(*events[i : i + 40])
    assert history_observer.node.history is not None
    history_observer.node.history.writer.flush(10)
    everything = _flows(history_observer, since=_since(3600))
    assert len(everything) == 120
    cases = [
        [flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED], source_pod=["empire/"])],
        [flow_pb2.FlowFilter(source_label=["k8s:app=xwing"])],  # not pushed: Python decides
        [flow_pb2.FlowFilter(destination_port=["80"], source_ip=["10.0.0.0/24"])],
        [
            flow_pb2.FlowFilter(verdict=[flow_pb2.FORWARDED]),
            flow_pb2.FlowFilter(source_pod=["xwing"]),
        ],
    ]
    for whitelist in cases:
        selection = FlowSelection(whitelist)
        expected = [f.uuid for f in everything if selection(f)]
        got = _flows(history_observer, since=_since(3600), whitelist=whitelist)
        assert [f.uuid for f in got] == expected, whitelist
    blacklist = [flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED])]
    got = _flows(history_observer, since=_since(3600), blacklist=blacklist)
    assert [f.uuid for f in got] == [f.uuid for f in everything if f.verdict != flow_pb2.DROPPED]


def test_follow_from_history_into_live_without_gap_or_repeat(
    history_observer: RunningObserver,
) -> None:
    _fill(history_observer, 100)
    request = observer_pb2.GetFlowsRequest(since=_since(3600), follow=True)
    call = history_observer.stub().GetFlows(request, timeout=30)
    got: list[int] = []
    done = threading.Event()

    def read() -> None:
        for response in call:
            if response.HasField("flow"):
                got.append(response.flow.l4.TCP.source_port)
                if len(got) >= 400:
                    break
        done.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(100, 400, 20):  # live flows while the reader crosses the seam
            history_observer.push(*(event(src_port=1000 + j) for j in range(i, i + 20)))
        assert done.wait(20), f"read {len(got)} flows"
    finally:
        call.cancel()
        reader.join(5)
    assert got == list(range(1000, 1400))


def test_server_status_reports_the_store_losses(history_observer: RunningObserver) -> None:
    status = history_observer.stub().ServerStatus(observer_pb2.ServerStatusRequest(), timeout=5)
    sources = {e.source: e.num_events_lost for e in status.septum_lost_events}
    assert sources[1000] == 0


def test_bad_filter_is_still_refused(history_observer: RunningObserver) -> None:
    bad = [flow_pb2.FlowFilter(source_ip=["not-an-ip"])]
    try:
        _flows(history_observer, since=_since(3600), whitelist=bad)
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    else:
        raise AssertionError("an invalid filter was accepted")


def test_a_long_answer_gives_the_loop_back_within_a_page(
    history_observer: RunningObserver,
) -> None:
    from septum.dataplane.observe.history.query import PAGE_ROWS
    from septum.dataplane.observe.query import FlowQuery, Paused

    count = 2 * PAGE_ROWS + PAGE_ROWS * 2  # the second page (8 x 4,096) is partly filled
    _fill(history_observer, count)
    history = history_observer.node.history
    assert history is not None
    query = FlowQuery(
        number=0, first=False, follow=False, since_ns=time.time_ns() - 3600 * 10**9,
        until_ns=None, selection=FlowSelection(()),
    )  # fmt: skip
    items = list(history.reader.stream(history_observer.node.ring, query, "n", pause_every=256))
    runs, run = [], 0  # messages between two pauses
    for item in items:
        if isinstance(item, Paused):
            runs.append(run)
            run = 0
        elif isinstance(item, bytes):
            run += 1
    runs.append(run)
    assert sum(runs) == count
    assert max(runs) <= PAGE_ROWS  # never more than a page's first size without a pause
