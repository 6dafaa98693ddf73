"""The writer: a store that falls behind costs counted flows, never the ingest thread's time;
a SIGKILL loses at most the batch in flight and the store reopens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from history_helpers import make_writer
from observe_helpers import event

from septum.dataplane.observe import record as r
from septum.dataplane.observe.history.sql import LOST_ROW_VERDICT
from septum.dataplane.observe.history.store import ChdbStore, StoreError, create_tables
from septum.dataplane.observe.history.writer import HISTORY_STORE_LOST_SOURCE


def _records(count: int, start_port: int = 1000) -> list[r.Record]:
    return [r.EVENT.unpack(event(src_port=start_port + i)) for i in range(count)]


class SlowStore:
    """A store whose inserts wait until released (or fail while `failing`)."""

    def __init__(self, inner: ChdbStore) -> None:
        self.inner = inner
        self.database = inner.database
        self.release = threading.Event()
        self.failing = False

    def execute(self, sql: str, params: object = None) -> None:
        self.inner.execute(sql, params)  # type: ignore[arg-type]

    def query(self, sql: str, params: object = None, fmt: str = "RowBinary") -> bytes:
        return self.inner.query(sql, params, fmt)  # type: ignore[arg-type]

    def insert(self, table: str, columns: Sequence[str], rows: bytes) -> None:
        self.release.wait(20)
        if self.failing:
            raise StoreError("store down")
        self.inner.insert(table, columns, rows)

    def close(self) -> None:
        self.inner.close()


def _count(store: ChdbStore, where: str = "1") -> int:
    return int(store.query(f"SELECT count() FROM septum_flows.flows WHERE {where}", fmt="TSV"))


def _lost_rows(store: ChdbStore) -> list[tuple[int, int, int, int]]:
    text = store.query(
        "SELECT lost_source, lost_count, seq, lost_seq_last FROM septum_flows.flows "
        "WHERE kind = 'lost' ORDER BY seq",
        fmt="TSV",
    ).decode()
    return [tuple(int(v) for v in line.split("\t")) for line in text.splitlines()]  # type: ignore[misc]


def test_a_store_that_falls_behind_counts_lost_flows_exactly(store: ChdbStore) -> None:
    slow = SlowStore(store)
    writer = make_writer(slow, max_batch_flows=100, max_queued_flows=300, flush_interval_s=0.01)  # type: ignore[arg-type]
    writer.start()
    try:
        started = time.monotonic()
        seq = 0
        for _ in range(20):  # 2,000 flows offered while the store takes nothing
            writer.offer(seq, _records(100))
            seq += 100
        offer_s = time.monotonic() - started
        slow.release.set()
        assert writer.flush(20)
    finally:
        writer.stop()
    assert offer_s < 1.0, "offer waited for the store"
    stored = _count(store, "kind = 'flow'")
    assert stored + writer.lost == 2000
    assert writer.lost >= 1000  # the queue holds 300; one batch of 100 was being written
    lost_rows = _lost_rows(store)
    assert sum(row[1] for row in lost_rows) == writer.lost
    assert all(row[0] == HISTORY_STORE_LOST_SOURCE for row in lost_rows)
    # The queries' pushdown finds lost rows by this verdict (sql.LOST_ROW_VERDICT).
    assert _count(store, f"kind = 'lost' AND verdict != {LOST_ROW_VERDICT}") == 0
    # Every sequence number is either a stored flow or inside exactly one lost range.
    seqs = {
        int(v)
        for v in store.query(
            "SELECT seq FROM septum_flows.flows WHERE kind = 'flow'", fmt="TSV"
        ).split()
    }
    for _, count, first, last in lost_rows:
        assert last - first + 1 == count
        seqs.update(range(first, last + 1))
    assert seqs == set(range(2000))


def test_a_failing_store_counts_the_batch_and_records_it_later(store: ChdbStore) -> None:
    slow = SlowStore(store)
    slow.release.set()
    slow.failing = True
    writer = make_writer(slow, flush_interval_s=0.01)  # type: ignore[arg-type]
    writer.start()
    try:
        writer.offer(0, _records(50))
        deadline = time.monotonic() + 10
        while writer.lost < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        slow.failing = False
        writer.offer(50, _records(10, 2000))
        assert writer.flush(10)
    finally:
        writer.stop()
    assert writer.lost == 50
    assert _count(store, "kind = 'flow'") == 10
    assert _lost_rows(store) == [(HISTORY_STORE_LOST_SOURCE, 50, 0, 49)]


_CHILD = """
from septum.dataplane.observe import record as r
from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.history.store import ChdbStore, create_tables
from septum.dataplane.observe.history.writer import HistoryWriter, WriterConfig
from septum.dataplane.observe.metadata import StaticMetadata
store = ChdbStore({path!r})
create_tables(store)
decoder = FlowDecoder(StaticMetadata(), DecoderConfig(node_name="n1"))
config = WriterConfig(max_batch_flows=500, flush_interval_s=0.001)
writer = HistoryWriter(store, decoder, "n1", config)
records = [
    r.EVENT.unpack(r.pack(time_ns=10**9 + i, src_port=1000 + i, protocol=6, ip_version=1))
    for i in range(500)
]
writer.start()
seq = 0
while True:
    writer.offer(seq, records)
    seq += 500
    writer.flush(10)
    print(writer.written, flush=True)
"""


def test_sigkill_during_writes_loses_at_most_one_batch(short_tmp: Path) -> None:
    child = _CHILD.format(path=str(short_tmp / "store"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=env
    )
    acknowledged = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 5000:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert acknowledged >= 5000, "the child never wrote"
    reopened = ChdbStore(short_tmp / "store")
    try:
        create_tables(reopened)
        stored = _count(reopened)
        # Everything acknowledged is there; at most the batch in flight beyond it.
        assert acknowledged <= stored <= acknowledged + 500
        assert stored % 500 == 0  # inserts are atomic: no half batch
        reopened.insert("flows", ("seq",), b"\x00" * 8)  # and it takes writes again
    finally:
        reopened.close()
