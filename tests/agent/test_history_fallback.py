"""An agent whose flow-history store cannot be opened keeps serving flows from the ring:
enforcement and CNI must not wait on an observability backend."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from septum.agent.daemon import node_observer
from septum.dataplane.observe.history import HistoryConfig
from septum.dataplane.observe.history.store import ServerSettings
from septum.dataplane.observe.metadata import StaticMetadata
from septum.dataplane.observe.node import ObserveConfig
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import FeedSource


def test_an_unreachable_clickhouse_leaves_the_ring_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:  # a port nothing listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ObserveConfig(
        node_name="n1",
        listen=ListenConfig(unix_socket=tmp_path / "o.sock"),
        history=HistoryConfig(server=ServerSettings(host="127.0.0.1", port=port)),
    )
    with caplog.at_level(logging.ERROR, logger="septum.agent"):
        observer = node_observer(config, FeedSource(), StaticMetadata(), None)
    try:
        assert observer.history is None
        assert observer.config.history is None and config.history is not None
        assert any(
            "flow history unavailable, serving the ring only" in r.getMessage()
            and f"127.0.0.1:{port}" in r.getMessage()
            for r in caplog.records
        ), caplog.text
        observer.start()
        assert (tmp_path / "o.sock").is_socket()  # the Observer serves
    finally:
        observer.stop()
