"""Retention removes what it should and nothing else; old repeated flows fold into counts."""

from __future__ import annotations

import time

from history_helpers import make_writer
from observe_helpers import event

from septum.dataplane.observe import record as r
from septum.dataplane.observe.history import retention
from septum.dataplane.observe.history.store import ChdbStore, disk_usage

DAY_NS = 86_400 * 10**9


def _write(store: ChdbStore, age_ns: int, count: int, start_seq: int, same: bool = False) -> None:
    """`count` flows `age_ns` old: stamped just before now on the boot clock, as the kernel
    stamps them (a fixed boot time would make their age depend on the machine's uptime)."""
    writer = make_writer(store, shift_ns=age_ns)
    start = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - 10**9
    records = [
        r.EVENT.unpack(event(src_port=40000 if same else 1000 + i, time_ns=start + i * 1000))
        for i in range(count)
    ]
    writer.write_batch([_flows(start_seq, records)])


def _flows(start_seq: int, records: list[r.Record]) -> object:
    from septum.dataplane.observe.history.writer import _Flows

    return _Flows(start_seq, records)


def _times(store: ChdbStore) -> list[int]:
    text = store.query(
        "SELECT toUnixTimestamp64Nano(time) FROM septum_flows.flows ORDER BY time", fmt="TSV"
    )
    return [int(v) for v in text.split()]


def test_age_retention_removes_exactly_the_older_flows(store: ChdbStore) -> None:
    for age_days, seq in ((9, 0), (5, 100), (3.2, 200), (3, 300), (0, 400)):
        _write(store, int(age_days * DAY_NS), 50, seq)
    before = _times(store)
    now = time.time_ns()
    config = retention.RetentionConfig(max_age_s=3.1 * 86_400, aggregate_after_s=None)
    report = retention.enforce(store, config, now_ns=now)
    cutoff = now - int(3.1 * DAY_NS)
    assert _times(store) == [t for t in before if t >= cutoff]
    assert len(_times(store)) == 100
    assert report.dropped_partitions >= 2


def test_size_retention_keeps_the_newest(store: ChdbStore) -> None:
    for i in range(6):
        _write(store, (6 - i) * DAY_NS // 2, 2000, i * 2000)
    size, rows = disk_usage(store)
    assert rows == 12_000
    before = _times(store)
    config = retention.RetentionConfig(max_bytes=size // 2, aggregate_after_s=None)
    retention.enforce(store, config)
    after_size, _ = disk_usage(store)
    assert after_size <= size // 2
    kept = _times(store)
    assert 0 < len(kept) < 12_000
    assert kept == before[-len(kept) :]  # the newest flows, nothing from the middle


def test_old_repeated_flows_fold_into_one_row_with_the_count(store: ChdbStore) -> None:
    _write(store, 2 * DAY_NS, 300, 0, same=True)  # one connection, no state change
    _write(store, 2 * DAY_NS + 10**9, 20, 300)  # 20 different connections
    _write(store, 0, 30, 320, same=True)  # today: left as is
    config = retention.RetentionConfig(aggregate_after_s=86_400)
    report = retention.enforce(store, config)
    assert report.aggregated_days >= 1
    text = store.query(
        "SELECT repeat, src_port, seq FROM septum_flows.flows WHERE time < now() - 86400 "
        "ORDER BY time",
        fmt="TSV",
    ).decode()
    rows = [tuple(int(v) for v in line.split("\t")) for line in text.splitlines()]
    folded = [row for row in rows if row[0] > 1]
    assert folded == [(300, 40000, 0)]  # the first flow stands for all 300
    assert len(rows) == 21
    today = store.query(
        "SELECT count(), sum(repeat) FROM septum_flows.flows WHERE time >= now() - 86400",
        fmt="TSV",
    ).split()
    assert [int(v) for v in today] == [30, 30]
    # A second pass leaves an aggregated day alone.
    assert retention.enforce(store, config).aggregated_days == 0
