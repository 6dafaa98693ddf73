"""Fixtures for flow-history tests: an Observer with history on, a bare store and writer."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from observe_helpers import NODE, RunningObserver, decoder, metadata

from septum.dataplane.observe.history import HistoryConfig, RetentionConfig, WriterConfig
from septum.dataplane.observe.history.store import ChdbStore, create_tables
from septum.dataplane.observe.history.writer import HistoryWriter
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import FeedSource

# Retention never runs by itself in these tests (they call retention.enforce).
QUIET_RETENTION = RetentionConfig(interval_s=3600, aggregate_after_s=None, max_age_s=10 * 86400)


def start_history_observer(
    directory: Path, capacity: int = 16, writer: WriterConfig | None = None, **history: object
) -> RunningObserver:
    feed = FeedSource()
    socket = directory / "observer.sock"
    config = ObserveConfig(
        node_name=NODE,
        listen=ListenConfig(unix_socket=socket),
        buffer_capacity=capacity,
        history=HistoryConfig(
            directory=directory / "store",
            writer=writer or WriterConfig(flush_interval_s=0.05),
            retention=QUIET_RETENTION,
            **history,  # type: ignore[arg-type]
        ),
    )
    node = NodeObserver(config, feed, metadata())
    node.start()
    return RunningObserver(node, feed, socket)


@pytest.fixture
def history_observer(short_tmp: Path) -> Iterator[RunningObserver]:
    running = start_history_observer(short_tmp)
    try:
        yield running
    finally:
        running.close()
        running.node.stop()


@pytest.fixture
def store(short_tmp: Path) -> Iterator[ChdbStore]:
    opened = ChdbStore(short_tmp / "store")
    create_tables(opened)
    try:
        yield opened
    finally:
        opened.close()


def make_writer(store: ChdbStore, shift_ns: int = 0, **config: object) -> HistoryWriter:
    """A writer over `store` whose flows are `shift_ns` older than their record times say."""
    dec = decoder()
    dec.wall_offset_ns -= shift_ns
    return HistoryWriter(store, dec, NODE, WriterConfig(**config))  # type: ignore[arg-type]


# Test modules import these helpers as `history_helpers` (pytest's importlib mode keeps
# conftest modules off sys.path), as the observe tests do with `observe_helpers`.
sys.modules.setdefault("history_helpers", sys.modules[__name__])
