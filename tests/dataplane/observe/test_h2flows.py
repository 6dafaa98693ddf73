"""query.stream_flows as the front drives it: Paused turns during long filtered-out runs."""

from __future__ import annotations

import observe_helpers as h

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.query import CaughtUp, FlowQuery, Paused, stream_flows
from septum.dataplane.observe.ring import FlowRing
from septum.dataplane.observe.wire import decode_response


def _ring(count: int) -> FlowRing:
    ring = FlowRing(h.decoder(), 4095)
    ring.extend(r.EVENT.unpack(h.event(src_port=10000 + i)) for i in range(count))
    return ring


def _query(ports: list[int], follow: bool = False) -> FlowQuery:
    request = observer_pb2.GetFlowsRequest(follow=follow)
    request.whitelist.add(source_port=[str(p) for p in ports])
    return FlowQuery.from_request(request)


def test_pauses_after_each_run_of_skipped_entries_and_loses_nothing() -> None:
    ring = _ring(100)
    items = list(stream_flows(ring, _query([10005, 10050]), h.NODE, pause_every=10))
    kinds = ["P" if isinstance(i, Paused) else "M" for i in items]
    # 5 skipped, match, 44 skipped (4 pauses), match, 49 skipped (4 pauses), end.
    assert kinds == ["M", "P", "P", "P", "P", "M", "P", "P", "P", "P"]
    flows = [decode_response(i) for i in items if not isinstance(i, Paused)]  # type: ignore[arg-type]
    assert [f.flow.l4.TCP.source_port for f in flows] == [10005, 10050]
    # Where each pause resumes: the next sequence number to examine.
    assert [int(i) for i in items if isinstance(i, Paused)] == [16, 26, 36, 46, 61, 71, 81, 91]


def test_no_pauses_unless_asked() -> None:
    ring = _ring(100)
    items = []
    for item in stream_flows(ring, _query([10099], follow=True), h.NODE):
        items.append(item)
        if isinstance(item, CaughtUp):
            break
    assert [type(i) for i in items] == [bytes, CaughtUp]
