"""Read the flow-event ring buffer through an mmap of the ring-buffer map.

The kernel maps a BPF ring buffer as a consumer page (ours to write), a producer page and
the data area mapped twice in a row, so a record that wraps is still contiguous.  Every
record Septum writes is one fixed-size ``struct septum_flow_event``, so a batch is one
slice of the data area; checking the batch's record headers is two C-level byte slices,
not a Python loop.  Waiting sleeps in the kernel: epoll on the map's fd, never a spin.
Exactly one reader per ring (per node) may consume.

Wake-ups are coalesced.  The kernel wakes the ring's waiters when a record is submitted
at the consumer's position, i.e. when the reader had taken everything: a reader that takes
each record as it comes makes nearly every event pay that wake-up, and the wake-up (an
irq_work, a self-IPI that traps to the hypervisor on a VM, then the thread's wake-up) runs
inside the producing BPF program.  Measured on a 2-core VM (docs/benchmarks.md): 28-39 us
of datapath time per TCP connection with such a reader, ~5 us with this one.  So after a
read that found records, the reader pauses ``coalesce_s`` before it looks again: records
that come meanwhile cost at most one wake-up (with nobody waiting in epoll) per pause, and
are taken in one batch.  The pause is taken even when records are already waiting (under a
steady stream they always are), unless a quarter of the ring is.  An idle reader (its last
look found nothing) sleeps in epoll and the first record wakes it at once.  The added
latency of an event is at most ``coalesce_s`` (1 ms by default), and only while events keep
coming.
"""

from __future__ import annotations

import mmap
import select
import time
from typing import Final

from septum.dataplane.abi import FLOW_EVENT_SIZE, RINGBUF_HEADER_SIZE, RINGBUF_RECORD_STRIDE
from septum.dataplane.errors import DatapathError

_BUSY_BIT: Final = 0x80  # in the header's most significant byte (little endian)
_DISCARD_BIT: Final = 0x40
# Pause of a busy reader before it looks again (see the module's docstring): the bound on
# the latency coalescing adds; a 4 MiB ring holds ~35,000 events, so it would take 35
# million events a second to fill it within one pause.
COALESCE_S: Final = 0.001


class RingBufferReader:
    """Consumer of one BPF ring buffer whose records are all flow events."""

    def __init__(self, map_fd: int, size_bytes: int, coalesce_s: float = COALESCE_S) -> None:
        if not 0.0 <= coalesce_s <= 1.0:
            raise DatapathError(
                f"RingBufferReader coalesce_s: {coalesce_s!r} must be between 0 and 1 second"
            )
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        self._producer = mmap.mmap(
            map_fd, page + 2 * size_bytes, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._data = memoryview(self._producer)[page:]
        # The positions are read and written as whole aligned 8-byte words (a native "Q"
        # memoryview is one load/store): the kernel reads the consumer position while we
        # write it, and a byte-by-byte write (struct "<Q") can show it a torn, far smaller
        # value, which makes bpf_ringbuf_reserve fail with space free.
        self._consumer_pos = memoryview(self._consumer)[:8].cast("Q")
        self._producer_pos = memoryview(self._producer)[:8].cast("Q")
        self._mask = size_bytes - 1
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)
        self.size_bytes = size_bytes
        self.coalesce_s = coalesce_s
        self._busy = False  # the last read found records: pause before the next look
        # A reader this far behind reads on at once: the pause must not fill the ring.
        self._no_pause_bytes = size_bytes // 4

    def fileno(self) -> int:
        """An fd that becomes readable when events are waiting (for asyncio add_reader)."""
        return self._epoll.fileno()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Sleep until events are waiting or the timeout passes: right after a read that
        found records, a pause of coalesce_s first, even when more records are already
        waiting (unless a quarter of the ring is); otherwise, and when the pause brought
        nothing, in epoll.

        The pause is taken with records waiting too: a reader that looks again at once
        under a steady stream finds the one or two records that came while it handled the
        last batch, and pays its per-batch cost for each (measured: 1.7 us of ingest CPU an
        event under a steady stream, 0.8 us in batches of ~100)."""
        if self._busy and self.coalesce_s:
            self._busy = False
            if self.pending_bytes() < self._no_pause_bytes:
                pause = self.coalesce_s if timeout_s is None else min(self.coalesce_s, timeout_s)
                time.sleep(pause)
                if timeout_s is not None:
                    timeout_s = max(0.0, timeout_s - pause)
        if self.pending_bytes():
            return True
        return bool(self._epoll.poll(-1 if timeout_s is None else timeout_s))

    def pending_bytes(self) -> int:
        return int(self._producer_pos[0] - self._consumer_pos[0])

    def read_records(self, max_records: int = 1 << 16) -> tuple[bytes, int]:
        """(bytes of N committed records WITH their 8-byte headers, N); stride 120.

        Decode these with ``struct.iter_unpack("<8x" + FLOW_EVENT_FORMAT[1:], chunk)``.
        """
        consumer = self._consumer_pos[0]
        producer = self._producer_pos[0]
        available = min((producer - consumer) // RINGBUF_RECORD_STRIDE, max_records)
        if available <= 0:
            return b"", 0
        start = consumer & self._mask
        chunk = bytes(self._data[start : start + available * RINGBUF_RECORD_STRIDE])
        high = chunk[3::RINGBUF_RECORD_STRIDE]
        count = available
        if any(high):
            count = self._committed_prefix(chunk, available)
        elif chunk[0::RINGBUF_RECORD_STRIDE].count(FLOW_EVENT_SIZE) != available:
            raise DatapathError("ring buffer holds a record that is not a flow event")
        if count:
            self._consumer_pos[0] = consumer + count * RINGBUF_RECORD_STRIDE
            self._busy = True
        if count != available:
            chunk = chunk[: count * RINGBUF_RECORD_STRIDE]
        return self._drop_discarded(chunk, count)

    @staticmethod
    def _committed_prefix(chunk: bytes, available: int) -> int:
        for index in range(available):
            if chunk[index * RINGBUF_RECORD_STRIDE + 3] & _BUSY_BIT:
                return index  # reserved, not yet submitted: stop before it
        return available

    @staticmethod
    def _drop_discarded(chunk: bytes, count: int) -> tuple[bytes, int]:
        high = chunk[3::RINGBUF_RECORD_STRIDE]
        if not any(high):
            return chunk, count
        kept = [
            chunk[i * RINGBUF_RECORD_STRIDE : (i + 1) * RINGBUF_RECORD_STRIDE]
            for i in range(count)
            if not high[i] & _DISCARD_BIT
        ]
        return b"".join(kept), len(kept)

    def read_raw(self, max_records: int = 1 << 16) -> bytes:
        """Bytes of N concatenated 112-byte flow events (``len(result) // 112`` events)."""
        chunk, count = self.read_records(max_records)
        if not count:
            return b""
        stride, header = RINGBUF_RECORD_STRIDE, RINGBUF_HEADER_SIZE
        view = memoryview(chunk)
        return b"".join([view[i + header : i + stride] for i in range(0, count * stride, stride)])

    def close(self) -> None:
        self._epoll.close()
        self._consumer_pos.release()
        self._producer_pos.release()
        self._data.release()
        self._producer.close()
        self._consumer.close()
