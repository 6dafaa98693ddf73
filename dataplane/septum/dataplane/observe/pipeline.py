"""The ingest loop: datapath event batches -> flow ring + metrics.

One thread drains the datapath's ring buffer in batches (the reader sleeps in
epoll until events arrive), stores the compact records, counts them for the
metrics, and turns increases of the kernel's lost-event counter into
LostEvent entries (PERF_EVENT_RING_BUFFER) in the flow stream.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from septum.dataplane.observe import record
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.metrics import FlowMetrics
from septum.dataplane.observe.ring import FlowRing, LostMarker

log = logging.getLogger(__name__)


class EventSource(Protocol):
    """Where raw event batches come from (the datapath, or a test/bench feeder)."""

    def read_batch(self, timeout_s: float) -> bytes:
        """Concatenated fixed-size events; b"" when nothing arrived in time."""
        ...

    def lost_events(self) -> int:
        """Monotonic count of events the kernel could not put in its ring buffer."""
        ...

    @property
    def header_bytes(self) -> int:
        """Bytes of header before each record in a batch (8: kernel ring-buffer records)."""
        ...


class HistorySink(Protocol):
    """Where ingested entries go after the ring, when the node keeps flow history: it
    must return at once (history/writer.py queues; what it cannot take it counts)."""

    def offer(self, start_seq: int, records: Sequence[record.Record]) -> None: ...

    def offer_lost(
        self, seq: int, source: int, count: int, first_ns: int, last_ns: int
    ) -> None: ...


class FlowPipeline:
    def __init__(
        self,
        source: EventSource,
        ring: FlowRing,
        metrics: FlowMetrics | None = None,
        on_batch: Callable[[int], None] | None = None,
        history: HistorySink | None = None,
    ) -> None:
        self.source = source
        self.ring = ring
        self.metrics = metrics
        self.history = history
        self._on_batch = on_batch
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost_seen = source.lost_events()
        self._header_bytes = source.header_bytes
        self.ingested = 0
        self.error: BaseException | None = None

    def process(self, batch: bytes) -> int:
        """Ingest one batch synchronously (also the benchmark's entry point)."""
        count = 0
        if batch and self._header_bytes == record.RAW_HEADER_BYTES:
            # Straight out of the kernel's ring: stored raw, counted from the bytes;
            # a tuple per record only for the history, when the node keeps one.
            start_seq = self.ring.head  # this thread is the ring's only writer
            count = self.ring.extend_raw(batch)
            if self.metrics is not None:
                self.metrics.observe_raw(batch)
            if self.history is not None:
                self.history.offer(start_seq, list(record.unpack_batch(batch, 8)))
        elif batch:
            records = list(record.unpack_batch(batch, self._header_bytes))
            start_seq = self.ring.head
            self.ring.extend(records)
            if self.history is not None:
                self.history.offer(start_seq, records)
            if self.metrics is not None:
                self.metrics.observe(records)
            count = len(records)
        self.ingested += count
        self.check_lost()
        if self._on_batch is not None:
            self._on_batch(count)
        return count

    def check_lost(self) -> None:
        lost = self.source.lost_events()
        if lost > self._lost_seen:
            seq = self.ring.head
            self.ring.add_lost(flow_pb2.PERF_EVENT_RING_BUFFER, lost - self._lost_seen)
            marker = self.ring.entry(seq)
            if self.history is not None and isinstance(marker, LostMarker):
                self.history.offer_lost(
                    seq, marker.source, marker.count, marker.first_ns, marker.last_ns
                )
            self._lost_seen = lost

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.process(self.source.read_batch(0.2))
        except BaseException as err:  # surfaced by stop() and logged: never silent
            self.error = err
            log.exception("flow pipeline stopped")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flow-ingest", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.error is not None:
            raise RuntimeError("flow pipeline failed") from self.error
