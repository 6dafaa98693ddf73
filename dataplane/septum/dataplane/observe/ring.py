"""The in-memory flow ring: the last N events, shared by every reader.

Writers append compact record tuples, or whole batches of raw datapath
records (one ingest thread); readers walk sequence numbers.  A raw batch is
copied into the ring's own byte arena in one or two slice copies and a slot's
tuple is unpacked only when a reader first asks for it: an agent nobody
watches pays no Python object per event (docs/architecture.md, "Flow observability").
A slot's serialized GetFlowsResponse (from the decoder's per-shape template,
no Flow object) and, for readers with filters, its Flow
are built on the first read that needs them and cached in the slot, so N
subscribers cost one encoding per flow, not N. A reader that falls
more than N events behind gets a LostEvent (HUBBLE_RING_BUFFER) with the exact
number of events it skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import FlowDecoder
from septum.dataplane.observe.wire import encode_flow_bytes_response, encode_lost_response

if TYPE_CHECKING:
    from septum.dataplane.observe.query import FlowHistory

DEFAULT_CAPACITY: Final = 4095
# A raw record as the kernel's ring buffer holds it: 8-byte header, then the event.
RAW_STRIDE: Final = r.RAW_STRIDE


@dataclass(frozen=True)
class LostMarker:
    """Events lost before they reached the ring, stored in the ring in order."""

    source: int  # flow.LostEventSource
    count: int
    first_ns: int  # wall clock
    last_ns: int


@dataclass(frozen=True)
class BuiltFlow:
    """A flow that did not come from the datapath's ring buffer but was built whole (the L7
    proxies' request and response flows): stored and served as it is."""

    flow: flow_pb2.Flow
    wall_ns: int


Entry = r.Record | LostMarker | BuiltFlow


class FlowRing:
    def __init__(self, decoder: FlowDecoder, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"flow buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.decoder = decoder
        self._entries: list[Entry | None] = [None] * capacity
        self._slot_seq: list[int] = [-1] * capacity
        self._flows: list[flow_pb2.Flow | None] = [None] * capacity
        self._wire: list[bytes | None] = [None] * capacity
        # Raw records by slot (extend_raw); a slot whose entry is None holds one here.
        self._raw = bytearray(capacity * RAW_STRIDE)
        self._nones: list[None] = [None] * capacity  # slice source that allocates nothing
        self._head = 0  # sequence number of the next write
        self._lock = threading.Lock()
        self._new_data = threading.Condition(threading.Lock())
        self.started_ns = time.monotonic_ns()
        self.seen_flows = 0  # every flow ever written (Hubble's seen_flows)
        self.lost_by_source: dict[int, int] = {}
        self._closed = False
        # Event-loop readers wait through listeners instead of the condition.
        self._listeners: dict[int, Callable[[], None]] = {}
        self._listener_token = 0
        # Flows older than the ring, when the node keeps them (query.stream_flows asks it).
        self.history: FlowHistory | None = None

    # ---- writing (the ingest thread) -----------------------------------
    @property
    def head(self) -> int:
        return self._head

    @property
    def oldest(self) -> int:
        return max(0, self._head - self.capacity)

    def __len__(self) -> int:
        return min(self._head, self.capacity)

    def extend(self, records: Iterable[r.Record]) -> int:
        """Append records in order; returns how many were written."""
        capacity = self.capacity
        entries, slot_seq, flows, wire = self._entries, self._slot_seq, self._flows, self._wire
        with self._lock:
            seq = self._head
            start = seq
            for rec in records:
                slot = seq % capacity
                slot_seq[slot] = -1
                flows[slot] = None
                wire[slot] = None
                entries[slot] = rec
                slot_seq[slot] = seq
                seq += 1
            self._head = seq
            written = seq - start
            self.seen_flows += written
        if written:
            self._wake()
        return written

    def extend_raw(self, batch: bytes | bytearray | memoryview) -> int:
        """Append a batch of raw records (each behind its 8-byte ring-buffer header, as
        DatapathSource reads them) without unpacking them; returns how many were written.
        Only the last `capacity` of a larger batch are kept (the sequence numbers of the
        rest pass, as if written and overwritten)."""
        if len(batch) % RAW_STRIDE:
            raise r.RecordError(
                f"event batch of {len(batch)} bytes is not a multiple of {RAW_STRIDE}"
            )
        count = len(batch) // RAW_STRIDE
        if not count:
            return 0
        capacity = self.capacity
        view = memoryview(batch)
        with self._lock:
            seq = self._head
            skipped = max(0, count - capacity)
            first = seq + skipped
            taken = 0
            # at most two runs of slots: up to the arena's end, then from its start
            while taken < count - skipped:
                slot = (first + taken) % capacity
                run = min(count - skipped - taken, capacity - slot)
                end = slot + run
                # A reader that checks slot_seq before and after it reads a slot sees -1
                # while the slot changes, never a record under the wrong sequence number.
                self._slot_seq[slot:end] = [-1] * run
                self._entries[slot:end] = self._nones[:run]
                self._flows[slot:end] = self._nones[:run]
                self._wire[slot:end] = self._nones[:run]
                offset = (skipped + taken) * RAW_STRIDE
                self._raw[slot * RAW_STRIDE : end * RAW_STRIDE] = view[
                    offset : offset + run * RAW_STRIDE
                ]
                self._slot_seq[slot:end] = range(first + taken, first + taken + run)
                taken += run
            self._head = seq + count
            self.seen_flows += count
        self._wake()
        return count

    def append_flow(self, flow: flow_pb2.Flow) -> None:
        """Append a flow built elsewhere (its time set); readers see it as any other."""
        entry = BuiltFlow(flow, flow.time.seconds * 1_000_000_000 + flow.time.nanos)
        with self._lock:
            seq = self._head
            slot = seq % self.capacity
            self._slot_seq[slot] = -1
            self._flows[slot] = flow
            self._wire[slot] = None
            self._entries[slot] = entry
            self._slot_seq[slot] = seq
            self._head = seq + 1
            self.seen_flows += 1
        self._wake()

    def add_lost(self, source: int, count: int, first_ns: int | None = None) -> None:
        """Record events lost upstream (kernel ring buffer, user-space queue)."""
        if count <= 0:
            return
        now = time.time_ns()
        marker = LostMarker(source, count, first_ns or now, now)
        with self._lock:
            self.lost_by_source[source] = self.lost_by_source.get(source, 0) + count
            slot = self._head % self.capacity
            self._slot_seq[slot] = -1
            self._flows[slot] = None
            self._wire[slot] = None
            self._entries[slot] = marker
            self._slot_seq[slot] = self._head
            self._head += 1
        self._wake()

    def count_reader_loss(self, count: int) -> None:
        with self._lock:
            key = flow_pb2.HUBBLE_RING_BUFFER
            self.lost_by_source[key] = self.lost_by_source.get(key, 0) + count

    def _wake(self) -> None:
        with self._new_data:
            self._new_data.notify_all()
        for listener in list(self._listeners.values()):
            listener()

    def wake_readers(self) -> None:
        """Wake every thread sleeping in wait_for (a reader that should re-check why it waits)."""
        with self._new_data:
            self._new_data.notify_all()

    def add_listener(self, callback: Callable[[], None]) -> int:
        """Call `callback` (from the writer's thread) after each write; returns a token."""
        self._listener_token += 1
        self._listeners[self._listener_token] = callback
        return self._listener_token

    def remove_listener(self, token: int) -> None:
        self._listeners.pop(token, None)

    def close(self) -> None:
        self._closed = True
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- reading (any thread) ------------------------------------------
    def wait_for(self, seq: int, timeout_s: float) -> bool:
        """Sleep until event `seq` exists (or timeout/close); True if it exists."""
        if self._head > seq:
            return True
        with self._new_data:
            if self._head <= seq and not self._closed:
                self._new_data.wait(timeout_s)
        return self._head > seq

    def entry(self, seq: int) -> Entry | None:
        """The event at `seq`, or None if it was overwritten or not written yet."""
        slot = seq % self.capacity
        value = self._entries[slot]
        if self._slot_seq[slot] != seq:
            return None
        if value is None:  # a raw record (extend_raw): unpacked on its first read
            value = r.EVENT_AFTER_HEADER.unpack_from(self._raw, slot * RAW_STRIDE)
            with self._lock:
                if self._slot_seq[slot] != seq:  # overwritten while it was unpacked
                    return None
                self._entries[slot] = value
        return value

    def wall_time_ns(self, entry: Entry) -> int:
        if isinstance(entry, LostMarker):
            return entry.last_ns
        if isinstance(entry, BuiltFlow):
            return entry.wall_ns
        return self.decoder.wall_time_ns(entry)

    def flow(self, seq: int, entry: r.Record | BuiltFlow) -> flow_pb2.Flow:
        """The decoded Flow for `seq`, built once and shared."""
        if isinstance(entry, BuiltFlow):
            return entry.flow
        slot = seq % self.capacity
        cached = self._flows[slot]
        if cached is not None and self._slot_seq[slot] == seq:
            return cached
        decoded = self.decoder.decode(entry, seq)
        with self._lock:
            if self._slot_seq[slot] == seq:
                self._flows[slot] = decoded
        return decoded

    def wire(self, seq: int, entry: Entry, node_name: str) -> bytes:
        """The serialized GetFlowsResponse for `seq`, serialized once and shared."""
        slot = seq % self.capacity
        cached = self._wire[slot]
        if cached is not None and self._slot_seq[slot] == seq:
            return cached
        if isinstance(entry, LostMarker):
            data = encode_lost_response(
                entry.source, entry.count, entry.first_ns, entry.last_ns, node_name
            )
        elif isinstance(entry, BuiltFlow):
            data = encode_flow_bytes_response(
                entry.flow.SerializeToString(), entry.flow.time.SerializeToString(), node_name
            )
        else:
            flow_bytes, time_bytes = self.decoder.encode(entry, seq)
            data = encode_flow_bytes_response(flow_bytes, time_bytes, node_name)
        with self._lock:
            if self._slot_seq[slot] == seq:
                self._wire[slot] = data
        return data

    def uptime_ns(self) -> int:
        return time.monotonic_ns() - self.started_ns
