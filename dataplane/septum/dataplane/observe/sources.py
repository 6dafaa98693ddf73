"""Event sources for the pipeline: the datapath's ring buffer, or an in-memory feed.

Used by tests and `septum bench flows` to offer event batches at a chosen rate
through exactly the path the datapath's reader uses.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

from septum.dataplane.observe.metrics import DatapathHealth


class _RingReader(Protocol):
    def wait(self, timeout_s: float | None = None) -> bool: ...

    def read_records(self, max_records: int = ...) -> tuple[bytes, int]: ...


class _Datapath(Protocol):
    """What the flow pipeline needs of septum.dataplane.datapath.NodeDatapath."""

    def flow_reader(self) -> _RingReader: ...

    def lost_events(self) -> int: ...


class DatapathSource:
    """The node datapath's ring buffer: batches with their 8-byte record
    headers (decoded in place), sleeping in epoll while it is empty."""

    header_bytes = 8

    def __init__(self, datapath: _Datapath, max_records: int = 1 << 14) -> None:
        self._datapath = datapath
        self._reader = datapath.flow_reader()
        self._max_records = max_records

    def read_batch(self, timeout_s: float) -> bytes:
        # wait() first even when records are waiting: after a batch it pauses, so the
        # next batch is whatever came meanwhile, not the one or two records that came
        # while this one was handled (see septum.dataplane.ringbuf).
        if not self._reader.wait(timeout_s):
            return b""
        chunk, _ = self._reader.read_records(self._max_records)
        return chunk

    def lost_events(self) -> int:
        return self._datapath.lost_events()


def datapath_health(datapath: object) -> DatapathHealth:
    """Septum health metrics read from a NodeDatapath at scrape time."""

    def endpoints() -> int:
        return len(datapath.endpoint_ids())  # type: ignore[attr-defined]

    def counters() -> dict[tuple[int, int, int], tuple[int, int]]:
        return {
            (int(k.direction), int(k.verdict), int(k.drop_reason)): (v.packets, v.bytes)
            for k, v in datapath.counters().items()  # type: ignore[attr-defined]
        }

    def map_fill() -> dict[str, tuple[int, int]]:
        # Walks each map's keys at scrape time (get_next_key): cheap for the
        # policy-sized maps, and bounded by capacity for conntrack.
        fill: dict[str, tuple[int, int]] = {}
        for attribute in _HEALTH_MAPS:
            bpf_map = getattr(datapath, attribute, None)
            if bpf_map is None:
                continue
            entries = sum(1 for _ in bpf_map.keys())
            fill[bpf_map.name] = (entries, bpf_map.capacity)
        return fill

    return DatapathHealth(endpoints=endpoints, counters=counters, map_fill=map_fill)


# NodeDatapath attributes of the maps whose fill level is exported.
_HEALTH_MAPS = (
    "endpoints_map",
    "ipcache_hosts",
    "ipcache_cidrs",
    "policy_map",
    "policy_ranges",
    "conntrack4_map",
    "conntrack6_map",
    "prefilter_map",
)


class FeedSource:
    """A thread-safe queue of raw event batches with a settable lost counter."""

    header_bytes = 0

    def __init__(self) -> None:
        self._batches: deque[bytes] = deque()
        self._ready = threading.Condition()
        self.lost = 0

    def push(self, batch: bytes) -> None:
        with self._ready:
            self._batches.append(batch)
            self._ready.notify()

    def read_batch(self, timeout_s: float) -> bytes:
        with self._ready:
            if not self._batches:
                self._ready.wait(timeout_s)
            if not self._batches:
                return b""
            parts = list(self._batches)
            self._batches.clear()
        return b"".join(parts)

    def lost_events(self) -> int:
        return self.lost

    def pending(self) -> int:
        with self._ready:
            return len(self._batches)
