"""Batches straight out of the kernel's ring buffer (8-byte record headers) are stored raw in
the flow ring and counted for the metrics from the bytes: readers, flows and metrics must be
exactly what the tuple path gives for the same events."""

from __future__ import annotations

import random
import struct

import observe_helpers as h
import pytest

from septum.dataplane.observe import record as r
from septum.dataplane.observe.decoder import FlowDecoder
from septum.dataplane.observe.metrics import FlowMetrics
from septum.dataplane.observe.pipeline import FlowPipeline
from septum.dataplane.observe.ring import FlowRing, LostMarker
from septum.dataplane.observe.sources import FeedSource

HEADER = struct.Struct("<II")  # len (busy/discard bits clear), page offset: as the kernel's


def varied_events(count: int, seed: int = 17) -> list[bytes]:
    """Events whose every metrics key field varies: kinds, verdicts, reasons, flags, ports,
    families, ICMP, identities (the host's too), match types and trace points."""
    pick = random.Random(seed).choice
    events = []
    for index in range(count):
        kind = pick(["allow", "drop", "trace", "icmp", "udp6", "reply"])
        if kind == "allow":
            event = h.event(src_port=30000 + index, tcp_flags=pick([0x02, 0x01, 0x04, 0x12]))
        elif kind == "drop":
            event = h.event(
                dst_port=pick([22, 8080, 443]),
                event_type=1,
                verdict=2,
                drop_reason=pick([133, 221, 181]),
                match_type=0,
            )
        elif kind == "trace":
            event = h.event(event_type=4, trace_point=pick([0, 5, 10, 101]), is_reply=1)
        elif kind == "icmp":
            event = h.event(
                h.XWING, h.DEATHSTAR, protocol=1, icmp_type=pick([8, 0, 3, 77]), icmp_code=1
            )
        elif kind == "udp6":
            event = h.event(h.TIEFIGHTER, h.DEATHSTAR, v6=True, protocol=17, dst_port=53)
        else:
            event = h.reply_event(30000 + index)
        if index % 7 == 0:  # the host's identity: no policy-verdict metric
            event = r.pack(
                **{**dict(zip(r.FIELDS, r.EVENT.unpack(event), strict=True)), "src_identity": 1}
            )
        events.append(event)
    return events


def samples(metrics: FlowMetrics) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample the metrics expose, in a fixed order (the exposition's order of label
    sets is the order they were first counted in: not part of what is compared)."""
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in metrics.collect()
        for s in family.samples
    )


def raw_batch(events: list[bytes]) -> bytes:
    return b"".join(HEADER.pack(r.SIZE, 0) + event for event in events)


def tuple_ring(events: list[bytes], capacity: int, decoder: FlowDecoder) -> FlowRing:
    ring = FlowRing(decoder, capacity)
    ring.extend(r.unpack_batch(b"".join(events)))
    return ring


@pytest.mark.parametrize(
    ("capacity", "sizes"),
    [
        (64, [10, 20, 5]),  # no wrap
        (16, [10, 10, 10, 3]),  # batches across the arena's end
        (8, [3, 21, 2]),  # a batch larger than the ring: its last 8 kept
    ],
)
def test_raw_batches_read_back_as_the_tuple_path_does(capacity: int, sizes: list[int]) -> None:
    events = varied_events(sum(sizes))
    decoder = h.decoder()  # one for both: the flows' times and ids come from it
    raw = FlowRing(decoder, capacity)
    at = 0
    for size in sizes:
        assert raw.extend_raw(raw_batch(events[at : at + size])) == size
        at += size
    expected = tuple_ring(events, capacity, decoder)
    assert (raw.head, raw.oldest, raw.seen_flows, len(raw)) == (
        expected.head,
        expected.oldest,
        expected.seen_flows,
        len(expected),
    )
    for seq in range(raw.head + 2):
        entry = raw.entry(seq)
        assert entry == expected.entry(seq)
        if entry is not None:
            assert not isinstance(entry, LostMarker)
            assert raw.flow(seq, entry) == expected.flow(seq, entry)
            assert raw.wire(seq, entry, h.NODE) == expected.wire(seq, entry, h.NODE)


def test_markers_and_raw_records_share_the_sequence() -> None:
    ring = FlowRing(h.decoder(), 4)
    events = varied_events(5)
    ring.extend_raw(raw_batch(events[:2]))
    ring.add_lost(1, 9)
    ring.extend_raw(raw_batch(events[2:5]))  # overwrites the first two records and the marker
    assert ring.head == 6
    assert [ring.entry(seq) for seq in range(2)] == [None, None]
    marker = ring.entry(2)
    assert isinstance(marker, LostMarker) and marker.count == 9
    assert [ring.entry(seq) for seq in range(3, 6)] == [
        r.EVENT.unpack(event) for event in events[2:5]
    ]
    ring.extend_raw(raw_batch(events[:1]))
    assert ring.entry(2) is None  # the marker's slot holds a record now


def test_a_torn_raw_batch_is_refused_whole() -> None:
    ring = FlowRing(h.decoder(), 8)
    with pytest.raises(r.RecordError, match="not a multiple of 120"):
        ring.extend_raw(raw_batch(varied_events(2))[:-1])
    assert ring.head == 0


def test_metrics_counted_from_raw_bytes_equal_the_tuple_path() -> None:
    events = varied_events(500)
    from_tuples, from_raw = FlowMetrics(), FlowMetrics()
    from_tuples.observe(r.unpack_batch(b"".join(events)))
    for at in range(0, len(events), 64):
        from_raw.observe_raw(raw_batch(events[at : at + 64]))

    expected = samples(from_tuples)
    assert len({name for name, _, _ in expected}) >= 6  # every kind of metric has samples
    assert samples(from_raw) == expected


class RawFeed(FeedSource):
    """The in-memory feed, offering batches with the kernel's record headers."""

    header_bytes = 8


def test_pipeline_takes_raw_batches_into_ring_and_metrics() -> None:
    events = varied_events(40)
    source = RawFeed()
    ring, metrics = FlowRing(h.decoder(), 4095), FlowMetrics()
    pipeline = FlowPipeline(source, ring, metrics)
    assert pipeline.process(raw_batch(events)) == 40
    assert pipeline.ingested == 40
    assert [ring.entry(seq) for seq in range(40)] == [r.EVENT.unpack(e) for e in events]
    reference = FlowMetrics()
    reference.observe(r.unpack_batch(b"".join(events)))
    assert samples(metrics) == samples(reference)
