"""The flow store's tables, as ClickHouse DDL (pure: strings, no I/O).

Two tables per database:

- ``flows``: one row per flow (or per lost-event report, ``kind = 'lost'``), ordered and
  partitioned by time. The columns are what users filter and group by (namespace, pod,
  verdict, drop reason, policy, L4 and L7 fields); everything else a Flow carries (labels,
  workloads, MACs, summary, ...) lives once per *shape* in ``flow_shapes``.
- ``flow_shapes``: a shape is a flow's serialized protobuf without time, uuid and ports —
  the part every flow of one connection shares (see decoder.FlowDecoder.template). A flow
  row names its shape by a 64-bit hash; a flow is rebuilt exactly as the ring would have
  sent it from its shape plus the row's time, boot (uuid prefix), seq and ports. Shapes
  are written per day partition so retention can drop them with the flows that use them.

Why these encodings: at 10^7 rows a day, every byte per row is 10 MB a day. Names are
LowCardinality (a per-part dictionary: a row stores a small index); time and seq are
delta-coded (neighbouring rows are microseconds apart); counters use T64 (bit-packing of
the range actually used); ZSTD over all of it. Ordering by hour first makes every query a
range scan of the hours of its time window; within an hour rows are grouped by verdict, so the
question history is mostly asked ("what was dropped, and why") reads the drops' granules
only, not every flow's (at 10^7 flows, 5 % dropped: 84 ms instead of 318 ms for a day's
drops of a namespace, and 5 % smaller on disk; the newest-100 query without a time bound
goes from 5 to 31 ms). Partitions by day make age retention a metadata operation (drop a
partition) instead of a rewrite.

The same statements run on chDB (embedded), a single ClickHouse server, or — through
``cluster_ddl`` — a replicated, sharded cluster: ReplicatedMergeTree per shard plus a
Distributed table over the shards that reads and writes as ``flows`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from septum.dataplane.observe.errors import ObserveError

DEFAULT_DATABASE: Final = "septum_flows"

# INSERT column order of a flow row. The writer packs the first part per row and the rest
# once per shape (see writer.py); the names are the DDL's.
ROW_COLUMNS: Final = ("time", "seq", "src_port", "dst_port", "bytes", "packets")
SHAPE_COLUMNS: Final = (
    "node",
    "boot",
    "kind",
    "repeat",
    "shape",
    "src_ip",
    "dst_ip",
    "ip_version",
    "protocol",
    "verdict",
    "drop_reason",
    "direction",
    "event_type",
    "is_reply",
    "tcp_flags",
    "src_identity",
    "dst_identity",
    "src_namespace",
    "src_pod",
    "dst_namespace",
    "dst_pod",
    "policy_namespace",
    "policy_name",
    "policy_kind",
    "l7_type",
    "dns_query",
    "http_method",
    "http_url",
    "http_code",
    "lost_source",
    "lost_count",
    "lost_seq_last",
)
INSERT_COLUMNS: Final = ROW_COLUMNS + SHAPE_COLUMNS

_FLOWS_COLUMNS: Final = """
    time DateTime64(9, 'UTC') CODEC(Delta, ZSTD(1)),
    seq UInt64 CODEC(Delta, ZSTD(1)),
    src_port UInt16 CODEC(ZSTD(1)),
    dst_port UInt16 CODEC(ZSTD(1)),
    bytes UInt64 CODEC(T64, ZSTD(1)),
    packets UInt32 CODEC(T64, ZSTD(1)),
    node LowCardinality(String),
    boot LowCardinality(FixedString(19)),
    kind Enum8('flow' = 0, 'lost' = 1),
    repeat UInt32 CODEC(T64, ZSTD(1)),
    shape UInt64 CODEC(ZSTD(1)),
    src_ip IPv6 CODEC(ZSTD(1)),
    dst_ip IPv6 CODEC(ZSTD(1)),
    ip_version UInt8,
    protocol UInt8,
    verdict UInt8,
    drop_reason UInt16,
    direction UInt8,
    event_type UInt8,
    is_reply UInt8,
    tcp_flags UInt8,
    src_identity UInt32 CODEC(ZSTD(1)),
    dst_identity UInt32 CODEC(ZSTD(1)),
    src_namespace LowCardinality(String),
    src_pod LowCardinality(String),
    dst_namespace LowCardinality(String),
    dst_pod LowCardinality(String),
    policy_namespace LowCardinality(String),
    policy_name LowCardinality(String),
    policy_kind LowCardinality(String),
    l7_type LowCardinality(String),
    dns_query LowCardinality(String),
    http_method LowCardinality(String),
    http_url String CODEC(ZSTD(3)),
    http_code UInt16,
    lost_source UInt32,
    lost_count UInt64,
    lost_seq_last UInt64,
    INDEX namespaces (src_namespace, dst_namespace) TYPE set(256) GRANULARITY 4,
    INDEX pods (src_pod, dst_pod) TYPE bloom_filter(0.01) GRANULARITY 4
"""
_FLOWS_TABLE: Final = """
PARTITION BY toYYYYMMDD(time)
ORDER BY (toStartOfHour(time), verdict, time, seq)
"""
_SHAPES_COLUMNS: Final = """
    day Date,
    shape UInt64,
    template String CODEC(ZSTD(3))
"""
_SHAPES_TABLE: Final = """
PARTITION BY day
ORDER BY shape
"""

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SchemaError(ObserveError, ValueError):
    """A database, cluster or table name that is not a plain identifier."""


def identifier(name: str, setting: str) -> str:
    """`name` when it is a plain SQL identifier: names are the one thing never passed as a
    query parameter, so they are checked instead."""
    if not _IDENTIFIER.match(name):
        raise SchemaError(f"{setting}: {name!r} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return name


def local_ddl(database: str = DEFAULT_DATABASE) -> list[str]:
    """Statements creating the store on chDB or one ClickHouse server (idempotent)."""
    db = identifier(database, "database")
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"CREATE TABLE IF NOT EXISTS {db}.flows ({_FLOWS_COLUMNS}) ENGINE = MergeTree"
        f"{_FLOWS_TABLE}",
        f"CREATE TABLE IF NOT EXISTS {db}.flow_shapes ({_SHAPES_COLUMNS}) "
        f"ENGINE = ReplacingMergeTree{_SHAPES_TABLE}",
        # Days whose repeated flows retention has folded into counts (retention.py).
        f"CREATE TABLE IF NOT EXISTS {db}.aggregated_days (day UInt32) "
        "ENGINE = ReplacingMergeTree ORDER BY day",
    ]


@dataclass(frozen=True)
class ClusterLayout:
    """A replicated, sharded deployment: `cluster` as named in the servers' remote_servers,
    the usual {shard}/{replica} macros, and the shard key that keeps one node's flows on
    one shard (queries by time then fan out to every shard, each scanning its own nodes)."""

    cluster: str
    database: str = DEFAULT_DATABASE
    zookeeper_path: str = "/clickhouse/tables/{shard}/septum_flows"
    replica: str = "{replica}"
    shard_key: str = "cityHash64(node)"


def cluster_ddl(layout: ClusterLayout) -> list[str]:
    """Statements for a replicated, sharded ClickHouse cluster (run once, on any server).

    Per shard: ``flows_local`` / ``flow_shapes_local`` (Replicated*MergeTree, the same
    columns, codecs, partitions and order as local_ddl). Over them: ``flows`` and
    ``flow_shapes`` as Distributed tables, so the store's queries run unchanged.
    """
    db = identifier(layout.database, "database")
    cluster = identifier(layout.cluster, "cluster")
    on = f"ON CLUSTER {cluster}"
    zk = layout.zookeeper_path.replace("'", "")
    replica = layout.replica.replace("'", "")
    return [
        f"CREATE DATABASE IF NOT EXISTS {db} {on}",
        f"CREATE TABLE IF NOT EXISTS {db}.flows_local {on} ({_FLOWS_COLUMNS}) "
        f"ENGINE = ReplicatedMergeTree('{zk}/flows', '{replica}'){_FLOWS_TABLE}",
        f"CREATE TABLE IF NOT EXISTS {db}.flow_shapes_local {on} ({_SHAPES_COLUMNS}) "
        f"ENGINE = ReplicatedReplacingMergeTree('{zk}/flow_shapes', '{replica}'){_SHAPES_TABLE}",
        f"CREATE TABLE IF NOT EXISTS {db}.flows {on} AS {db}.flows_local "
        f"ENGINE = Distributed({cluster}, {db}, flows_local, {layout.shard_key})",
        f"CREATE TABLE IF NOT EXISTS {db}.flow_shapes {on} AS {db}.flow_shapes_local "
        f"ENGINE = Distributed({cluster}, {db}, flow_shapes_local, rand())",
    ]
