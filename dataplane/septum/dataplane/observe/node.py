"""One node's flow observability, assembled: what the agent starts and stops.

source -> FlowPipeline -> FlowRing (+ FlowMetrics) -> ObserverService ->
ObserverServer (unix socket, TCP 4244) and a Prometheus HTTP endpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from threading import Thread
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.metadata import Metadata, StaticMetadata
from septum.dataplane.observe.metrics import ALL_METRICS, DatapathHealth, FlowMetrics
from septum.dataplane.observe.peers import PeerDirectory
from septum.dataplane.observe.pipeline import EventSource, FlowPipeline
from septum.dataplane.observe.ring import DEFAULT_CAPACITY, FlowRing
from septum.dataplane.observe.server import ListenConfig, ObserverServer
from septum.dataplane.observe.service import NodeIdentity, ObserverService

if TYPE_CHECKING:
    from septum.dataplane.observe.history import FlowHistory, HistoryConfig
    from septum.dataplane.observe.history.export import ExportConfig, FlowExporter
    from septum.dataplane.observe.history.otlp import OtlpConfig

log = logging.getLogger(__name__)


def septum_version() -> str:
    try:
        return importlib_metadata.version("septum")
    except importlib_metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass
class ObserveConfig:
    node_name: str
    listen: ListenConfig
    buffer_capacity: int = DEFAULT_CAPACITY
    metrics_address: tuple[str, int] | None = None  # (host, port); None: no HTTP endpoint
    metrics_enabled: frozenset[str] = frozenset(ALL_METRICS)
    node_labels: tuple[str, ...] = ()
    advertised_address: str = ""  # how peers reach the TCP listener (GetNodes/Peer)
    tls_server_name: str = ""
    health: DatapathHealth = field(default_factory=DatapathHealth)
    # Flow history (septum.dataplane.observe.history); None: the ring only, as Hubble.
    history: HistoryConfig | None = None
    # Flow logs leaving the node, as Hubble's exporters: files of Hubble's JSON lines
    # (ExportConfig) and OTLP logs to a collector (OtlpConfig); each a follower of the ring.
    exports: tuple[ExportConfig | OtlpConfig, ...] = ()


class NodeObserver:
    def __init__(
        self,
        config: ObserveConfig,
        source: EventSource,
        metadata: Metadata | None = None,
        peers: PeerDirectory | None = None,  # every node for peer.Peer/Notify; None: itself
    ) -> None:
        self.config = config
        self.metadata = metadata if metadata is not None else StaticMetadata()
        version = septum_version()
        self.decoder = FlowDecoder(
            self.metadata,
            DecoderConfig(
                node_name=config.node_name, node_labels=config.node_labels, emitter_version=version
            ),
        )
        self.ring = FlowRing(self.decoder, config.buffer_capacity)
        self.metrics = FlowMetrics(
            enabled=config.metrics_enabled,
            lost_by_source=lambda: dict(self.ring.lost_by_source),
            buffer_fill=lambda: (len(self.ring), self.ring.capacity),
            health=config.health,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.metrics)
        self.history: FlowHistory | None = None
        if config.history is not None:
            # Imported only when configured: the embedded engine is large.
            from septum.dataplane.observe.history import FlowHistory

            self.history = FlowHistory(config.history, self.ring, self.decoder, config.node_name)
        self.pipeline = FlowPipeline(
            source,
            self.ring,
            self.metrics,
            history=self.history.writer if self.history is not None else None,
        )
        namespaces = getattr(self.metadata, "namespaces", list)
        self.service = ObserverService(
            self.ring,
            NodeIdentity(
                name=config.node_name,
                address=config.advertised_address or (config.listen.tcp_address or ""),
                tls_server_name=config.tls_server_name,
                version=f"septum v{version}",
            ),
            namespaces=namespaces,
            more_lost=self.history.lost_by_source if self.history is not None else dict,
            peers=peers,
        )
        self.server = ObserverServer(self.service, config.listen)
        self.exporters: list[FlowExporter] = [
            _exporter(self.ring, config.node_name, export, version) for export in config.exports
        ]
        self._metrics_server: WSGIServer | None = None
        self._metrics_thread: Thread | None = None
        self.metrics_port: int | None = None

    @property
    def tcp_port(self) -> int | None:
        return self.server.tcp_port

    def start(self) -> None:
        if self.history is not None:
            self.history.start()
        for exporter in self.exporters:
            exporter.start()
        self.pipeline.start()
        self.server.start()
        tcp = self.config.listen.tcp_address
        if not self.config.advertised_address and tcp and self.server.tcp_port:
            # Advertise the port actually bound (an address may ask for port 0).
            host = tcp.rsplit(":", 1)[0]
            self.service.node.address = f"{host}:{self.server.tcp_port}"
        if self.config.metrics_address is not None:
            host, port = self.config.metrics_address
            server, thread = start_http_server(port, addr=host, registry=self.registry)
            self._metrics_server, self._metrics_thread = server, thread
            self.metrics_port = int(server.server_port)
            log.info("metrics on http://%s:%d/metrics", host, self.metrics_port)

    def stop(self) -> None:
        errors: list[Any] = []
        try:
            self.server.stop()
        finally:
            if self._metrics_server is not None:
                self._metrics_server.shutdown()
                self._metrics_server.server_close()
            try:
                self.pipeline.stop()
            except RuntimeError as err:
                errors.append(err)
            for exporter in self.exporters:
                exporter.stop()  # after the pipeline: they send what it put in the ring
            if self.history is not None:
                self.history.stop()  # after the pipeline: what it offered gets written
        if errors:
            raise errors[0]

    def __enter__(self) -> NodeObserver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exporter(
    ring: FlowRing, node_name: str, config: ExportConfig | OtlpConfig, version: str
) -> FlowExporter:
    # Imported only when configured, as history is.
    from septum.dataplane.observe.history.export import FlowExporter
    from septum.dataplane.observe.history.otlp import OtlpConfig, OtlpSink

    if isinstance(config, OtlpConfig):
        return FlowExporter(ring, node_name, config, OtlpSink(config, node_name, version))
    return FlowExporter(ring, node_name, config)
