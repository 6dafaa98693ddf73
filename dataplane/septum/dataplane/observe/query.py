"""GetFlows semantics over the ring: number/first/follow/since/until + filters.

Yields serialized GetFlowsResponse messages (bytes), one flow per message as
Hubble's wire requires. Lost events always pass the filters: a reader must
learn about a gap even when it asked for a narrow set of flows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.filters import FlowSelection
from septum.dataplane.observe.ring import FlowRing, LostMarker
from septum.dataplane.observe.wire import encode_lost_response

# How often a follower wakes with nothing new to check for cancellation.
_FOLLOW_POLL_S = 0.5


@dataclass(frozen=True)
class FlowQuery:
    number: int
    first: bool
    follow: bool
    since_ns: int | None
    until_ns: int | None
    selection: FlowSelection
    # The request's filter messages (flow history pushes them down into SQL).
    whitelist: tuple[flow_pb2.FlowFilter, ...] = ()
    blacklist: tuple[flow_pb2.FlowFilter, ...] = ()

    @classmethod
    def from_request(cls, request: observer_pb2.GetFlowsRequest) -> FlowQuery:
        return cls(
            number=request.number,
            first=request.first,
            follow=request.follow,
            since_ns=request.since.ToNanoseconds() if request.HasField("since") else None,
            until_ns=request.until.ToNanoseconds() if request.HasField("until") else None,
            selection=FlowSelection(request.whitelist, request.blacklist),
            whitelist=tuple(request.whitelist),
            blacklist=tuple(request.blacklist),
        )


class _Reader:
    def __init__(self, ring: FlowRing, query: FlowQuery, node_name: str) -> None:
        self.ring = ring
        self.query = query
        self.node_name = node_name

    def in_time_range(self, wall_ns: int) -> bool:
        q = self.query
        if q.since_ns is not None and wall_ns < q.since_ns:
            return False
        return q.until_ns is None or wall_ns <= q.until_ns

    def matches(self, seq: int, entry: object) -> bool:
        if isinstance(entry, LostMarker):
            return True
        if self.query.selection.matches_everything:
            return True
        return self.query.selection(self.ring.flow(seq, entry))  # type: ignore[arg-type]

    def backlog_start(
        self, head: int, pause_every: int = 0
    ) -> Generator[Paused, None, tuple[int, int]]:
        """First sequence number of the historical part of the answer, and how
        many entries were examined since the last pause.

        A generator returning them: with pause_every > 0 it yields Paused after
        that many entries examined, because with a narrow filter the walk back
        may cover the whole ring (tens of thousands of decoded flows).
        """
        ring, q = self.ring, self.query
        oldest = ring.oldest
        if q.first or q.number == 0:
            return oldest, 0
        # Walk back from the newest event to find the q.number most recent matches.
        found = 0
        scanned = 0
        seq = head - 1
        while seq >= oldest:
            if pause_every and scanned >= pause_every:
                scanned = 0
                yield Paused(seq)
                # The writer may have overwritten the oldest entries meanwhile.
                oldest = max(oldest, ring.oldest)
                if seq < oldest:
                    break
            entry = ring.entry(seq)
            if entry is None:
                break
            scanned += 1
            wall_ns = ring.wall_time_ns(entry)
            if q.since_ns is not None and wall_ns < q.since_ns:
                return seq + 1, scanned
            if (
                not isinstance(entry, LostMarker)
                and self.in_time_range(wall_ns)
                and self.matches(seq, entry)
            ):
                found += 1
                if found == q.number:
                    return seq, scanned
            seq -= 1
        return max(seq + 1, oldest), scanned


class CaughtUp(int):
    """Yielded instead of a message when a follower has read everything:
    the caller waits (in its own way: thread or event loop) until the ring
    holds this sequence number, then resumes the generator."""


class Paused(int):
    """Yielded, when the caller asks for it, after a run of entries that gave no
    message (filtered out or outside since/until): an event-loop caller lets
    its other work run, then resumes the generator. Never yielded by default."""


# (message, whether it is a flow rather than a LostEvent) for the sequence numbers [first, end).
Backfill = Callable[[int, int], Iterator[tuple[bytes, bool]] | None]


class FlowHistory(Protocol):
    """Flows older than the ring (septum.dataplane.observe.history), when a node keeps them."""

    def stream(
        self, ring: FlowRing, query: FlowQuery, node_name: str, pause_every: int
    ) -> Iterator[bytes | CaughtUp | Paused]:
        """The whole answer: history where the query reaches past the ring, then the ring."""
        ...


def stream_flows(
    ring: FlowRing,
    query: FlowQuery,
    node_name: str,
    pause_every: int = 0,
) -> Iterator[bytes | CaughtUp | Paused]:
    """The GetFlows response stream, as pre-serialized messages.

    pause_every > 0: yield Paused after that many skipped entries in a row, so
    a narrow filter over a busy ring never holds the caller for a whole scan.
    With flow history attached to the ring, the history answers (and reads the ring).
    """
    if ring.history is not None:
        return ring.history.stream(ring, query, node_name, pause_every)
    return stream_ring(ring, query, node_name, pause_every)


def stream_ring(
    ring: FlowRing,
    query: FlowQuery,
    node_name: str,
    pause_every: int = 0,
    start_seq: int | None = None,
    backfill: Backfill | None = None,
) -> Iterator[bytes | CaughtUp | Paused]:
    """GetFlows over the ring alone.

    start_seq: begin there instead of where number/first put the start (the history
    answered what comes before). backfill(first, end): the messages of the sequence
    numbers [first, end) the ring overwrote before this reader got them, or None when
    they cannot be had (the reader then gets a HUBBLE_RING_BUFFER LostEvent).
    """
    q = query
    reader = _Reader(ring, q, node_name)
    # Without follow, the answer is what the ring holds at the time of the call.
    head = ring.head
    stop_at = None if q.follow else head
    # The forward scan's count continues the backward one's: no run between
    # two pauses is longer than pause_every entries.
    if start_seq is None:
        seq, skipped = yield from reader.backlog_start(head, pause_every)
    else:
        seq, skipped = start_seq, 0
    limit = q.number if (q.number and (q.first or not q.follow)) else 0
    sent = 0
    while True:
        if pause_every and skipped >= pause_every:
            skipped = 0
            yield Paused(seq)
        if stop_at is not None and seq >= stop_at:
            return
        if seq >= ring.head:
            if ring.closed:
                return
            yield CaughtUp(seq)
            continue
        oldest = ring.oldest
        if seq < oldest and backfill is not None:
            missed = backfill(seq, oldest)
            if missed is not None:
                for message, is_flow in missed:
                    yield message
                    if is_flow:
                        sent += 1
                        if limit and sent >= limit:
                            return
                seq = oldest
                continue
        if seq < oldest:
            # This reader fell behind and the ring overwrote what it had not read.
            skipped = oldest - seq
            ring.count_reader_loss(skipped)
            yield encode_lost_response(
                flow_pb2.HUBBLE_RING_BUFFER, skipped, _now_ns(), _now_ns(), node_name
            )
            seq = oldest
            continue
        entry = ring.entry(seq)
        if entry is None:  # overwritten between the two reads; handled next turn
            continue
        current = seq
        seq += 1
        wall_ns = ring.wall_time_ns(entry)
        if q.until_ns is not None and wall_ns > q.until_ns and not isinstance(entry, LostMarker):
            return
        if q.since_ns is not None and wall_ns < q.since_ns:
            skipped += 1
            continue
        if not reader.matches(current, entry):
            skipped += 1
            continue
        skipped = 0
        yield ring.wire(current, entry, node_name)
        if not isinstance(entry, LostMarker):
            sent += 1
            if limit and sent >= limit:
                return


def _now_ns() -> int:
    return time.time_ns()


def stream_flows_blocking(
    ring: FlowRing, query: FlowQuery, node_name: str, is_active: Callable[[], bool]
) -> Iterator[bytes]:
    """stream_flows for a thread: sleeps on the ring's condition when caught up."""
    for item in stream_flows(ring, query, node_name):
        if isinstance(item, Paused):
            continue  # not asked for; a thread has no one to give way to
        if isinstance(item, CaughtUp):
            while is_active() and not ring.closed and not ring.wait_for(int(item), _FOLLOW_POLL_S):
                pass
            if not is_active():
                return
            continue
        yield item
