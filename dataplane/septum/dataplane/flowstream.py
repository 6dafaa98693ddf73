"""The node's flow events as they come out of the ring buffer (``sep_events``), and the
count of those the kernel had to drop (``sep_lost``)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

from septum.dataplane.events import Flow, decode_events
from septum.dataplane.maps import PerCpuMap, sum_per_cpu
from septum.dataplane.ringbuf import RingBufferReader


class FlowStream:
    """The node's one ring-buffer consumer, opened on first use."""

    def __init__(
        self,
        events_fd: int,
        events_bytes: int,
        lost: PerCpuMap[ctypes.c_uint32, ctypes.c_uint64],
    ) -> None:
        self._events_fd = events_fd
        self._events_bytes = events_bytes
        self._lost = lost
        self._reader: RingBufferReader | None = None

    def reader(self) -> RingBufferReader:
        """The consumer itself (raw batches, epoll wake-ups)."""
        if self._reader is None:
            self._reader = RingBufferReader(self._events_fd, self._events_bytes)
        return self._reader

    def read(self, timeout_s: float | None = 0.0, max_events: int = 1 << 16) -> list[Flow]:
        """Decoded events waiting now, sleeping up to `timeout_s` for the first one."""
        reader = self.reader()
        if timeout_s != 0.0 and not reader.wait(timeout_s):
            return []
        return decode_events(reader.read_raw(max_events))

    def follow(self, timeout_s: float | None = None) -> Iterator[Flow]:
        """Decoded events as they come; stops after `timeout_s` without any (None: never)."""
        reader = self.reader()
        while reader.wait(timeout_s):
            yield from decode_events(reader.read_raw())

    def lost(self) -> int:
        """Events the kernel could not queue because the ring buffer was full."""
        per_cpu = self._lost.lookup(ctypes.c_uint32(0))
        return 0 if per_cpu is None else sum_per_cpu(per_cpu).value

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
