"""Retention: flows older than the age limit go, the oldest go while the store is over its
size limit, and older days' repeated flows are folded into counts.

Age and size are enforced the same way: whole day partitions that are entirely too old are
dropped (a metadata operation), and in the one partition the cutoff falls into, the older
rows are deleted by a synchronous mutation, so exactly the rows before the cutoff go.

Aggregation follows Hubble's flow-aggregation rule: a flow that repeats an earlier flow of
the same connection without any change of state (same addresses, ports, identities,
verdict, drop reason, direction, TCP flags, policy — everything but time, uuid and
counters) carries no new information. For a day older than `aggregate_after_s`, each such
run becomes one row: the first flow (its time and uuid), with `repeat` = how many flows it
stands for and bytes/packets summed. GetFlows returns that first flow, as Hubble's
aggregation would have sent it; SQL users read `repeat`. Lost-event rows stay as they are.
The day is rebuilt in a staging table and swapped in with REPLACE PARTITION (atomic).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from dataclasses import dataclass
from typing import Final

from septum.dataplane.observe.history import schema
from septum.dataplane.observe.history.store import FlowStore, StoreError, disk_usage

log = logging.getLogger(__name__)

_DAY_NS: Final = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class RetentionConfig:
    max_age_s: float = 7 * 86_400
    max_bytes: int = 10 << 30
    aggregate_after_s: float | None = 86_400  # None: never fold repeated flows
    interval_s: float = 300.0


@dataclass
class RetentionReport:
    dropped_partitions: int = 0
    deleted_before_ns: int | None = None
    aggregated_days: int = 0


def _partitions(store: FlowStore, table: str) -> list[tuple[str, int, int]]:
    """(partition id, min time ns, max time ns) of a table's active parts, oldest first."""
    text = store.query(
        "SELECT partition_id, toUnixTimestamp64Nano(min(min_time)), "
        "toUnixTimestamp64Nano(max(max_time)) FROM ("
        "SELECT partition_id, toDateTime64(min_time, 9, 'UTC') AS min_time, "
        "toDateTime64(max_time, 9, 'UTC') AS max_time FROM system.parts "
        "WHERE database = {db:String} AND table = {t:String} AND active) "
        "GROUP BY partition_id ORDER BY partition_id",
        {"db": store.database, "t": table},
        fmt="TSV",
    ).decode()
    out = []
    for line in text.splitlines():
        pid, low, high = line.split("\t")
        out.append((pid, int(low), int(high)))
    return out


def _day_number(partition_id: str) -> int:
    """Days since the Unix epoch of a YYYYMMDD partition id."""
    day = datetime.date(int(partition_id[:4]), int(partition_id[4:6]), int(partition_id[6:]))
    return (day - datetime.date(1970, 1, 1)).days


def _count_before(store: FlowStore, cutoff_ns: int) -> int:
    text = store.query(
        f"SELECT count() FROM {store.database}.flows "
        "WHERE time < fromUnixTimestamp64Nano({c:Int64}, 'UTC')",
        {"c": cutoff_ns},
        fmt="TSV",
    )
    return int(text.decode().strip() or 0)


def delete_before(store: FlowStore, cutoff_ns: int, report: RetentionReport) -> None:
    """Remove every flow row with time < cutoff_ns, and shapes of days before its day."""
    db = store.database
    cutoff_day = cutoff_ns // _DAY_NS
    for pid, _low, _high in _partitions(store, "flows"):
        if _day_number(pid) < cutoff_day:  # the whole day is before the cutoff
            store.execute(f"ALTER TABLE {db}.flows DROP PARTITION ID {{p:String}}", {"p": pid})
            report.dropped_partitions += 1
    if _count_before(store, cutoff_ns):
        store.execute(
            f"ALTER TABLE {db}.flows DELETE "
            "WHERE time < fromUnixTimestamp64Nano({c:Int64}, 'UTC') SETTINGS mutations_sync = 2",
            {"c": cutoff_ns},
        )
    store.execute(
        f"ALTER TABLE {db}.flow_shapes DELETE WHERE day < toDate({{d:UInt32}}) "
        "SETTINGS mutations_sync = 2",
        {"d": cutoff_day},
    )
    report.deleted_before_ns = cutoff_ns


def _size_cutoff(store: FlowStore, max_bytes: int) -> int | None:
    """The time before which rows must go to bring the store under max_bytes, or None."""
    size, rows = disk_usage(store)
    if size <= max_bytes or rows == 0:
        return None
    # A quarter more than the average row size says: part overheads do not shrink with rows.
    excess_rows = min(rows, int(rows * (size - max_bytes) / size * 1.25) + max(1, rows // 100))
    text = store.query(
        f"SELECT toUnixTimestamp64Nano(time) FROM {store.database}.flows "
        "ORDER BY time LIMIT 1 OFFSET {n:UInt64}",
        {"n": excess_rows - 1},
        fmt="TSV",
    ).decode()
    return int(text) + 1 if text.strip() else None


def aggregate_day(store: FlowStore, day_start_ns: int) -> None:
    """Fold the repeated flows of one UTC day (see the module docstring)."""
    db = store.database
    pid = time.strftime("%Y%m%d", time.gmtime(day_start_ns // 1_000_000_000))
    keyed = ("src_port", "dst_port", "node", "shape")
    summed = {"bytes": "sum(bytes)", "packets": "sum(packets)", "repeat": "sum(repeat)"}
    first = {"time": "min(time)", "seq": "argMin(seq, time)", "boot": "argMin(boot, time)"}
    columns: list[str] = []
    for column in schema.INSERT_COLUMNS:
        if column in keyed:
            columns.append(column)
        elif column in summed:
            columns.append(summed[column])
        elif column in first:
            columns.append(first[column])
        else:
            columns.append(f"any({column})")
    names = ", ".join(schema.INSERT_COLUMNS)
    store.execute(f"CREATE TABLE IF NOT EXISTS {db}.flows_staging AS {db}.flows")
    store.execute(f"TRUNCATE TABLE {db}.flows_staging")
    in_day = "toYYYYMMDD(time) = {p:UInt32}"
    store.execute(
        f"INSERT INTO {db}.flows_staging ({names}) SELECT {', '.join(columns)} FROM {db}.flows "
        f"WHERE {in_day} AND kind = 'flow' GROUP BY {', '.join(keyed)}",
        {"p": int(pid)},
    )
    store.execute(
        f"INSERT INTO {db}.flows_staging ({names}) SELECT {names} FROM {db}.flows "
        f"WHERE {in_day} AND kind = 'lost'",
        {"p": int(pid)},
    )
    store.execute(
        f"ALTER TABLE {db}.flows REPLACE PARTITION ID {{i:String}} FROM {db}.flows_staging",
        {"i": pid},
    )
    store.execute(f"TRUNCATE TABLE {db}.flows_staging")
    store.execute(f"INSERT INTO {db}.aggregated_days (day) VALUES ({{p:UInt32}})", {"p": int(pid)})


def _aggregated(store: FlowStore) -> set[int]:
    text = store.query(f"SELECT DISTINCT day FROM {store.database}.aggregated_days", fmt="TSV")
    return {int(line) for line in text.decode().split()}


def enforce(
    store: FlowStore, config: RetentionConfig, now_ns: int | None = None
) -> RetentionReport:
    """One pass of retention: age, size, then aggregation of old days."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    report = RetentionReport()
    cutoff = now_ns - int(config.max_age_s * 1e9)
    if _count_before(store, cutoff) or any(
        high < cutoff for _, _, high in _partitions(store, "flows")
    ):
        delete_before(store, cutoff, report)
    # Bytes per row is an estimate (parts have a fixed overhead): re-measure and go on.
    for _ in range(8):
        size_cutoff = _size_cutoff(store, config.max_bytes)
        if size_cutoff is None:
            break
        delete_before(store, size_cutoff, report)
    if config.aggregate_after_s is not None:
        horizon_day = (now_ns - int(config.aggregate_after_s * 1e9)) // _DAY_NS
        done = _aggregated(store)
        for pid, low, _high in _partitions(store, "flows"):
            day = low // _DAY_NS
            if day < horizon_day and int(pid) not in done:
                aggregate_day(store, day * _DAY_NS)
                report.aggregated_days += 1
    return report


class RetentionWorker:
    """Runs `enforce` every interval on a thread of its own (and once at start)."""

    def __init__(self, store: FlowStore, config: RetentionConfig) -> None:
        self.store = store
        self.config = config
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.last_error: StoreError | None = None

    def _run(self) -> None:
        while True:
            try:
                enforce(self.store, self.config)
                self.passes += 1
            except StoreError as err:  # keep serving; the next pass tries again
                self.last_error = err
                log.warning("flow history retention failed: %s", err)
            if self._stop.wait(self.config.interval_s):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flow-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
