"""Merging the agents' GetFlows streams into one stream in time order (pure: no I/O, no clock).

Each agent sends its flows in the order its ring holds them, which is time order up to the small
disorder between CPUs. Follow mode cannot wait for every agent before each message (an idle
agent would stop the stream), so, as Hubble Relay does, messages wait in a sort buffer (a
priority queue by time) and leave it when the order is known or the wait is over:

- every open stream has already sent something at least as new (the message cannot be
  overtaken any more, unless a stream itself sends out of order), or
- it has waited `lag_ns` (an idle or slow agent holds the others back at most that long), or
- the buffer holds `max_len` messages (the oldest is forced out; readers stop reading their
  agents at that size, so the buffer never grows past it: nothing is dropped here, the agents
  count what a slow reader misses as HUBBLE_RING_BUFFER LostEvents, which pass through).

A message that arrives older than one already sent is sent at once and counted as `late`.
History (no follow) is finite: `merge_history` sorts it and keeps the requested count.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from septum.relay.messages import FLOW


@dataclass(frozen=True)
class Item:
    """One serialized GetFlowsResponse from one node, with what the merge orders it by."""

    node: str
    kind: int  # messages.FLOW, NODE_STATUS or LOST_EVENTS
    time_ns: int
    data: bytes


@dataclass
class MergeStats:
    sent: int = 0
    late: int = 0  # sent after a newer message had already left (order relaxed, not dropped)
    forced: int = 0  # left because the buffer was full, not because the order was known


@dataclass
class SortBuffer:
    """The follow-mode merge: push what the agents send, pop what may leave now."""

    lag_ns: int
    max_len: int
    stats: MergeStats = field(default_factory=MergeStats)

    def __post_init__(self) -> None:
        if self.max_len < 1:
            raise ValueError(f"sort buffer length must be >= 1, got {self.max_len}")
        # (time_ns, arrival order, arrived_ns, data)
        self._heap: list[tuple[int, int, int, bytes]] = []
        self._order = 0
        self._newest: dict[str, int] = {}  # open stream -> newest time it sent (-1: nothing)
        self._last_sent_ns = -1

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def full(self) -> bool:
        return len(self._heap) >= self.max_len

    def open(self, node: str) -> None:
        """A stream starts: until it sends something, messages wait for it (up to the lag)."""
        self._newest.setdefault(node, -1)

    def close(self, node: str) -> None:
        """A stream ended: nothing waits for it any more."""
        self._newest.pop(node, None)

    def push(self, node: str, time_ns: int, data: bytes, now_ns: int) -> None:
        newest = self._newest.get(node, -1)
        if time_ns > newest and node in self._newest:
            self._newest[node] = time_ns
        self._order += 1
        heapq.heappush(self._heap, (time_ns, self._order, now_ns, data))

    def _watermark(self) -> int:
        """Every open stream has sent something at least this new."""
        return min(self._newest.values(), default=1 << 63)

    def pop_ready(self, now_ns: int) -> list[bytes]:
        """The messages that may leave now, oldest first."""
        heap = self._heap
        out: list[bytes] = []
        if not heap:
            return out
        watermark = self._watermark()
        aged_before = now_ns - self.lag_ns
        stats = self.stats
        while heap:
            time_ns, _, arrived_ns, data = heap[0]
            if len(heap) >= self.max_len and time_ns > watermark and arrived_ns > aged_before:
                stats.forced += 1
            elif time_ns > watermark and arrived_ns > aged_before:
                break
            heapq.heappop(heap)
            if time_ns < self._last_sent_ns:
                stats.late += 1
            else:
                self._last_sent_ns = time_ns
            out.append(data)
        stats.sent += len(out)
        return out

    def next_due_ns(self) -> int | None:
        """When the next message out will have waited the full lag (None: empty).

        Only the oldest by time can leave next, so only its wait counts."""
        if not self._heap:
            return None
        return self._heap[0][2] + self.lag_ns

    def drain(self) -> list[bytes]:
        """Everything still waiting, oldest first (every stream has ended)."""
        out = [data for _, _, _, data in sorted(self._heap)]
        self._heap.clear()
        self.stats.sent += len(out)
        return out


def merge_history(streams: Iterable[Iterable[Item]], number: int, first: bool) -> list[Item]:
    """Finite answers of several nodes as one, by time: all of it (number 0), or the `number`
    oldest (first) or newest flows. Lost events and node status inside the kept span stay."""
    items = sorted((item for stream in streams for item in stream), key=lambda item: item.time_ns)
    if number <= 0:
        return items
    flow_positions = [i for i, item in enumerate(items) if item.kind == FLOW]
    if len(flow_positions) <= number:
        return items
    if first:
        return items[: flow_positions[number - 1] + 1]
    return items[flow_positions[-number] :]
