"""The history writer: flows from the ingest thread into the store, in batches, off the hot path.

The ingest thread only appends to a bounded queue (`offer`): it never waits for the store.
A background thread takes what is queued every `flush_interval_s` (or as soon as a full
batch is waiting), encodes it as RowBinary and inserts it in one statement per table.
When the queue is full, or the store refuses a batch, the flows are counted as lost
(`lost`) and a lost-event row with the exact count and sequence range takes their place
in the store, so a later query over that time learns of the gap. A crash loses at most
what was queued: one batch, plus what arrived while it was being written.

Encoding costs one struct.pack per flow: everything a flow shares with the other flows
of its connection (names, policy, addresses, the serialized Flow template) is encoded
once per shape and reused (see schema.py).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import FlowDecoder, shape_key
from septum.dataplane.observe.history import schema
from septum.dataplane.observe.history.store import FlowStore, StoreError
from septum.dataplane.observe.wire import varint

log = logging.getLogger(__name__)

# flow.LostEventSource has no value for "the flow store could not take them" (Hubble keeps
# no store). Septum's own value, far above Hubble's (0-3): proto3 enums are open, so Hubble
# clients decode it and print the number. Documented in docs/hubble-compat.md.
HISTORY_STORE_LOST_SOURCE: Final = 1000

_DAY_NS: Final = 86_400 * 1_000_000_000
_ROW = struct.Struct("<qQHHQI")  # ROW_COLUMNS: time, seq, src_port, dst_port, bytes, packets
_NO_ADDRESS: Final = bytes(16)
_V4_MAPPED: Final = bytes(10) + b"\xff\xff"


@dataclass(frozen=True)
class WriterConfig:
    max_batch_flows: int = 65_536
    flush_interval_s: float = 1.0
    # What may wait for the store: a few seconds of a busy node. Past it, flows are lost.
    max_queued_flows: int = 262_144


@dataclass
class _Flows:
    start_seq: int
    records: Sequence[r.Record]


@dataclass
class _Lost:
    source: int
    count: int
    first_seq: int
    last_seq: int
    first_ns: int
    last_ns: int


def _string(value: str | bytes) -> bytes:
    """A RowBinary String: varint length, then the bytes."""
    data = value.encode() if isinstance(value, str) else value
    return varint(len(data)) + data


def _ipv6(raw: bytes, ip_version: int) -> bytes:
    if ip_version == r.IP_V4:
        return _V4_MAPPED + raw[:4]
    if ip_version == r.IP_V6:
        return bytes(raw[:16])
    return _NO_ADDRESS


def shape_id(template: bytes) -> int:
    """A shape's id: stable across restarts, so re-registering a shape is harmless."""
    return int.from_bytes(hashlib.blake2b(template, digest_size=8).digest(), "little")


def _policy(flow: flow_pb2.Flow) -> tuple[str, str, str]:
    for policies in (
        flow.ingress_denied_by,
        flow.egress_denied_by,
        flow.ingress_allowed_by,
        flow.egress_allowed_by,
    ):
        if len(policies):
            return policies[0].namespace, policies[0].name, policies[0].kind
    return "", "", ""


class ShapeEncoder:
    """Record -> RowBinary row; the shape-dependent columns encoded once per shape."""

    def __init__(self, decoder: FlowDecoder, node_name: str) -> None:
        self.decoder = decoder
        self._node = _string(node_name)
        self._boot = decoder.uuid_prefix.encode()
        if len(self._boot) != 19:
            raise ValueError(f"flow uuid prefix {decoder.uuid_prefix!r} is not 19 bytes")
        self._shapes: dict[tuple[object, ...], tuple[int, bytes, bytes]] = {}
        self._generation = -1

    def _shape(self, rec: r.Record) -> tuple[int, bytes, bytes]:
        template = self.decoder.template(rec)
        sid = shape_id(template)
        flow = flow_pb2.Flow.FromString(template)
        policy_ns, policy_name, policy_kind = _policy(flow)
        ip_version = rec[r.IP_VERSION]
        l7 = flow.l7 if flow.HasField("l7") else None
        l7_type = (l7.WhichOneof("record") or "") if l7 is not None else ""
        blob = b"".join(
            (
                self._node,
                self._boot,
                struct.pack("<bIQ", 0, 1, sid),
                _ipv6(rec[r.SRC_ADDR], ip_version),
                _ipv6(rec[r.DST_ADDR], ip_version),
                struct.pack(
                    "<BBBHBBBBII",
                    ip_version,
                    rec[r.PROTOCOL],
                    rec[r.VERDICT],
                    int(flow.drop_reason_desc),
                    rec[r.DIRECTION],
                    rec[r.EVENT_TYPE],
                    1 if rec[r.IS_REPLY] else 0,
                    rec[r.TCP_FLAGS],
                    rec[r.SRC_IDENTITY],
                    rec[r.DST_IDENTITY],
                ),
                _string(flow.source.namespace),
                _string(flow.source.pod_name),
                _string(flow.destination.namespace),
                _string(flow.destination.pod_name),
                _string(policy_ns),
                _string(policy_name),
                _string(policy_kind),
                _string(l7_type),
                _string(l7.dns.query if l7 is not None else ""),
                _string(l7.http.method if l7 is not None else ""),
                _string(l7.http.url if l7 is not None else ""),
                struct.pack("<HIQQ", l7.http.code if l7 is not None else 0, 0, 0, 0),
            )
        )
        return sid, blob, template

    def encode(
        self,
        start_seq: int,
        records: Sequence[r.Record],
        rows: list[bytes],
        shapes: set[tuple[int, int]],
    ) -> dict[int, bytes]:
        """Append one RowBinary row per record to `rows`; returns the templates of shapes
        not yet in `shapes` (a set of (day, shape id) the caller keeps)."""
        generation = self.decoder.metadata_generation
        if generation != self._generation or len(self._shapes) > 65_536:
            self._shapes.clear()
            self._generation = generation
        cache = self._shapes
        pack = _ROW.pack
        offset = self.decoder.wall_offset_ns
        new: dict[int, bytes] = {}
        append = rows.append
        seq = start_seq
        for rec in records:
            key = shape_key(rec)
            entry = cache.get(key)
            if entry is None:
                entry = cache[key] = self._shape(rec)
            sid, blob, template = entry
            wall_ns = rec[r.TIME_NS] + offset
            day = wall_ns // _DAY_NS
            if (day, sid) not in shapes:
                shapes.add((day, sid))
                new[day << 64 | sid] = template
            append(
                pack(wall_ns, seq, rec[r.SRC_PORT], rec[r.DST_PORT], rec[r.BYTES], rec[r.PACKETS])
            )
            append(blob)
            seq += 1
        return new

    def encode_lost(self, lost: _Lost) -> bytes:
        return b"".join(
            (
                _ROW.pack(lost.last_ns, lost.first_seq, 0, 0, 0, 0),
                self._node,
                self._boot,
                struct.pack("<bIQ", 1, 0, 0),
                _NO_ADDRESS,
                _NO_ADDRESS,
                # ip_version, protocol, verdict (LOST_ROW_VERDICT: sql.pushdown relies on
                # it), drop_reason, direction, event_type, is_reply, tcp_flags, identities
                bytes(1 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 4 + 4),
                b"\x00" * 11,  # eleven empty strings: names, policy, L7
                struct.pack("<HIQQ", 0, lost.source, lost.count, lost.last_seq),
            )
        )


def _shape_rows(templates: dict[int, bytes]) -> bytes:
    parts = []
    for day_and_id, template in templates.items():
        parts.append(struct.pack("<HQ", day_and_id >> 64, day_and_id & 0xFFFFFFFFFFFFFFFF))
        parts.append(_string(template))
    return b"".join(parts)


class HistoryWriter:
    """A bounded queue in front of the store, drained by one background thread."""

    def __init__(
        self,
        store: FlowStore,
        decoder: FlowDecoder,
        node_name: str,
        config: WriterConfig | None = None,
    ) -> None:
        self.store = store
        self.config = config or WriterConfig()
        self.encoder = ShapeEncoder(decoder, node_name)
        self._queue: deque[_Flows | _Lost] = deque()
        self._queued_flows = 0
        self._cond = threading.Condition()
        self._stop = False
        self._flush_wanted = 0
        self._thread: threading.Thread | None = None
        self._shapes: set[tuple[int, int]] = set()
        self._shapes_day = -1
        self.offered_seq = 0  # one past the last sequence number offered
        self.durable_seq = 0  # every sequence number below it is stored or counted lost
        self.lost = 0  # flows the store could not take (queue full, store failure)
        self.written = 0  # flows stored
        self.batches = 0
        self.error: BaseException | None = None

    # ---- the ingest thread ------------------------------------------------------------
    def offer(self, start_seq: int, records: Sequence[r.Record]) -> None:
        """Queue flows with sequence numbers start_seq..; never blocks on the store."""
        count = len(records)
        if not count:
            return
        with self._cond:
            self.offered_seq = start_seq + count
            if self._queued_flows + count > self.config.max_queued_flows:
                offset = self.encoder.decoder.wall_offset_ns
                self._drop(
                    start_seq,
                    count,
                    records[0][r.TIME_NS] + offset,
                    records[-1][r.TIME_NS] + offset,
                )
                return
            self._queue.append(_Flows(start_seq, records))
            self._queued_flows += count
            if self._queued_flows >= self.config.max_batch_flows:
                self._cond.notify()

    def offer_lost(self, seq: int, source: int, count: int, first_ns: int, last_ns: int) -> None:
        """A lost-event entry of the ring (e.g. the kernel's); always queued (it is tiny)."""
        with self._cond:
            self.offered_seq = seq + 1
            self._queue.append(_Lost(source, count, seq, seq, first_ns, last_ns))

    def _drop(self, first_seq: int, count: int, first_ns: int, last_ns: int) -> None:
        """Count flows as lost and leave a lost-event row in their place (lock held)."""
        self.lost += count
        last = self._queue[-1] if self._queue else None
        if (
            isinstance(last, _Lost)
            and last.source == HISTORY_STORE_LOST_SOURCE
            and last.last_seq + 1 == first_seq
        ):
            last.count += count
            last.last_seq = first_seq + count - 1
            last.last_ns = last_ns
            return
        self._queue.append(
            _Lost(
                HISTORY_STORE_LOST_SOURCE,
                count,
                first_seq,
                first_seq + count - 1,
                first_ns,
                last_ns,
            )
        )

    # ---- the writer thread ------------------------------------------------------------
    def _take(self) -> list[_Flows | _Lost]:
        taken: list[_Flows | _Lost] = []
        flows = 0
        while self._queue and flows < self.config.max_batch_flows:
            item = self._queue.popleft()
            if isinstance(item, _Flows):
                flows += len(item.records)
                self._queued_flows -= len(item.records)
            taken.append(item)
        return taken

    def write_batch(self, items: list[_Flows | _Lost]) -> None:
        """Encode and insert one batch (shapes first: a stored flow always has its shape)."""
        rows: list[bytes] = []
        new_shapes: dict[int, bytes] = {}
        flows = 0
        today = time.time_ns() // _DAY_NS
        if today != self._shapes_day:  # a new day partition needs its own shape rows
            self._shapes.clear()
            self._shapes_day = today
        for item in items:
            if isinstance(item, _Flows):
                new_shapes.update(
                    self.encoder.encode(item.start_seq, item.records, rows, self._shapes)
                )
                flows += len(item.records)
            else:
                rows.append(self.encoder.encode_lost(item))
        try:
            if new_shapes:
                self.store.insert(
                    "flow_shapes", ("day", "shape", "template"), _shape_rows(new_shapes)
                )
            if rows:
                self.store.insert("flows", schema.INSERT_COLUMNS, b"".join(rows))
        except StoreError:
            for key in new_shapes:
                self._shapes.discard((key >> 64, key & 0xFFFFFFFFFFFFFFFF))
            raise
        self.written += flows
        self.batches += 1

    def _fail(self, items: list[_Flows | _Lost], err: StoreError) -> None:
        """The store refused a batch: its flows are lost; their lost row is retried first."""
        log.warning("flow history: a batch could not be stored: %s", err)
        offset = self.encoder.decoder.wall_offset_ns
        with self._cond:
            retry: list[_Lost] = []
            for item in items:
                if isinstance(item, _Lost):
                    retry.append(item)
                    continue
                count = len(item.records)
                self.lost += count
                first_ns = item.records[0][r.TIME_NS] + offset
                last_ns = item.records[-1][r.TIME_NS] + offset
                previous = retry[-1] if retry else None
                if (
                    previous is not None
                    and previous.source == HISTORY_STORE_LOST_SOURCE
                    and previous.last_seq + 1 == item.start_seq
                ):
                    previous.count += count
                    previous.last_seq += count
                    previous.last_ns = last_ns
                else:
                    retry.append(
                        _Lost(
                            HISTORY_STORE_LOST_SOURCE,
                            count,
                            item.start_seq,
                            item.start_seq + count - 1,
                            first_ns,
                            last_ns,
                        )
                    )
            self._queue.extendleft(reversed(retry))

    def _end_of(self, items: list[_Flows | _Lost]) -> int:
        last = items[-1]
        if isinstance(last, _Flows):
            return last.start_seq + len(last.records)
        return last.last_seq + 1

    def _run(self) -> None:
        interval = self.config.flush_interval_s
        while True:
            with self._cond:
                if not self._stop and not self._flush_wanted:
                    if self._queued_flows < self.config.max_batch_flows:
                        self._cond.wait(interval)
                items = self._take()
                stopping = self._stop
                flush_wanted = self._flush_wanted
            if items:
                try:
                    self.write_batch(items)
                except StoreError as err:
                    self._fail(items, err)
                    if stopping:
                        return
                    with self._cond:  # give a failing store a rest before the retry
                        self._cond.wait(interval)
                    continue
                except BaseException as err:  # a bug: surface it, never lose silently
                    self.error = err
                    log.exception("flow history writer stopped")
                    self._fail(items, StoreError(str(err)))
                    return
                with self._cond:
                    self.durable_seq = max(self.durable_seq, self._end_of(items))
                    self._cond.notify_all()
                continue
            with self._cond:
                if not self._queue:
                    self.durable_seq = max(self.durable_seq, self.offered_seq)
                    if flush_wanted:
                        self._flush_wanted = 0
                    self._cond.notify_all()
                if stopping and not self._queue:
                    return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flow-history", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything offered so far is stored or counted lost."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self.offered_seq
            self._flush_wanted += 1
            self._cond.notify_all()
            while self.durable_seq < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return self.durable_seq >= target
                self._cond.wait(remaining)
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def queued_flows(self) -> int:
        return self._queued_flows
