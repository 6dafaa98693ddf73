"""Flow history: days of flows behind the same GetFlows API.

    FlowPipeline ──offer──▶ writer.HistoryWriter (bounded queue, background batches)
                                   │ RowBinary
                                   ▼
                        store.FlowStore: ChdbStore (embedded) | ServerStore (ClickHouse)
                                   ▲                    ▲
        query.HistoryReader (GetFlows past the ring)   retention.RetentionWorker
    export.FlowExporter follows the ring into rotating Hubble JSON flow logs.

`FlowHistory.open` assembles them for one node; `NodeObserver` does it when its
`ObserveConfig.history` is set (off by default: nothing changes without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from septum.dataplane.observe.decoder import FlowDecoder
from septum.dataplane.observe.history.export import ExportConfig
from septum.dataplane.observe.history.query import HistoryReader
from septum.dataplane.observe.history.retention import RetentionConfig, RetentionWorker
from septum.dataplane.observe.history.schema import DEFAULT_DATABASE
from septum.dataplane.observe.history.store import (
    ChdbStore,
    FlowStore,
    ServerSettings,
    ServerStore,
    StoreError,
    create_tables,
)
from septum.dataplane.observe.history.writer import (
    HISTORY_STORE_LOST_SOURCE,
    HistoryWriter,
    WriterConfig,
)
from septum.dataplane.observe.ring import FlowRing

__all__ = [
    "HISTORY_STORE_LOST_SOURCE",
    "ExportConfig",
    "FlowHistory",
    "HistoryConfig",
    "RetentionConfig",
    "ServerSettings",
    "StoreError",
    "WriterConfig",
]


@dataclass(frozen=True)
class HistoryConfig:
    """Where and how a node keeps flow history.

    directory: the embedded store's directory (the agent's --flow-history-dir: one per
    node, under its state dir). server: a ClickHouse server or cluster instead (a
    setting, not a code change; the tables must exist there, see schema.cluster_ddl).
    """

    directory: Path | None = None
    server: ServerSettings | None = None
    writer: WriterConfig = field(default_factory=WriterConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    create_tables: bool = True  # on a cluster, the DDL is the operator's (cluster_ddl)
    # The embedded store's database. chDB runs one engine per process, on one directory:
    # Observers sharing a process (tests, benchmarks) share the directory, each with its own
    # database.
    database: str = DEFAULT_DATABASE

    def open_store(self) -> FlowStore:
        if self.server is not None:
            return ServerStore(self.server)
        if self.directory is None:
            raise StoreError("flow history: set a directory (embedded store) or a server")
        return ChdbStore(Path(self.directory), self.database)


class FlowHistory:
    """One node's store, writer, reader and retention, started and stopped together."""

    def __init__(
        self, config: HistoryConfig, ring: FlowRing, decoder: FlowDecoder, node_name: str
    ) -> None:
        self.config = config
        self.store = config.open_store()
        try:
            if config.create_tables:
                create_tables(self.store)
        except BaseException:
            self.store.close()
            raise
        self.writer = HistoryWriter(self.store, decoder, node_name, config.writer)
        self.reader = HistoryReader(self.store, self.writer)
        self.retention = RetentionWorker(self.store, config.retention)
        self.ring = ring

    def lost_by_source(self) -> dict[int, int]:
        return {HISTORY_STORE_LOST_SOURCE: self.writer.lost}

    def start(self) -> None:
        self.writer.start()
        self.ring.history = self.reader
        self.retention.start()

    def stop(self) -> None:
        try:
            self.retention.stop()
            self.writer.stop()
        finally:
            self.ring.history = None
            self.store.close()
