"""Flows as OTLP logs: a real gRPC collector (the OTLP LogsService from opentelemetry-proto)
receives what a NodeObserver exports; a collector that is away or refuses costs counted
records, never the exporter."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from observe_helpers import DEATHSTAR, NODE, TIEFIGHTER, XWING, event, metadata, poll
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.logs.v1 import logs_pb2

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.history.otlp import OtlpConfig
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import FeedSource


@dataclass
class Collector(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC logs receiver that keeps what it gets; `refuse` answers UNAVAILABLE,
    `reject` claims partial success for that many records of the next batch."""

    requests: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    refuse: bool = False
    reject: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(  # noqa: N802 - the service's method name
        self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> logs_service_pb2.ExportLogsServiceResponse:
        if self.refuse:
            context.abort(grpc.StatusCode.UNAVAILABLE, "collector busy")
        with self.lock:
            self.requests.append(request)
            self.headers.append(dict(context.invocation_metadata()))
            rejected, self.reject = self.reject, 0
        reply = logs_service_pb2.ExportLogsServiceResponse()
        if rejected:
            reply.partial_success.rejected_log_records = rejected
            reply.partial_success.error_message = "too old"
        return reply

    def records(self) -> list[logs_pb2.LogRecord]:
        with self.lock:
            return [
                record
                for request in self.requests
                for resource in request.resource_logs
                for scope in resource.scope_logs
                for record in scope.log_records
            ]


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def _observer(short_tmp: Path, otlp: OtlpConfig) -> tuple[NodeObserver, FeedSource]:
    feed = FeedSource()
    config = ObserveConfig(
        node_name=NODE,
        listen=ListenConfig(unix_socket=short_tmp / "observer.sock"),
        exports=(otlp,),
    )
    node = NodeObserver(config, feed, metadata())
    node.start()
    return node, feed


def _attributes(record: logs_pb2.LogRecord) -> dict[str, object]:
    return {
        kv.key: kv.value.string_value if kv.value.HasField("string_value") else kv.value.int_value
        for kv in record.attributes
    }


def test_flows_reach_the_collector_as_logs_with_hubbles_lines(
    short_tmp: Path, collector: tuple[Collector, str]
) -> None:
    servicer, endpoint = collector
    otlp = OtlpConfig(
        endpoint=endpoint,
        insecure=True,
        max_batch=8,
        headers=(("Authorization", "Bearer t0ken"),),
        deny=[flow_pb2.FlowFilter(source_pod=["empire/"])],
    )
    node, feed = _observer(short_tmp, otlp)
    try:
        events = [
            event(
                TIEFIGHTER if i % 5 == 4 else XWING,
                DEATHSTAR,
                src_port=2000 + i,
                **({"verdict": 2, "drop_reason": 133, "event_type": 1} if i % 4 == 0 else {}),
            )
            for i in range(40)
        ]
        feed.push(b"".join(events))
        poll("records at the collector", lambda: len(servicer.records()) == 32 or None)
    finally:
        node.stop()
    records = servicer.records()
    request = servicer.requests[0]
    resource = {
        kv.key: kv.value.string_value for kv in request.resource_logs[0].resource.attributes
    }
    assert resource == {"service.name": "septum-agent", "k8s.node.name": NODE}
    assert request.resource_logs[0].scope_logs[0].scope.name == "septum.flows"
    assert all(h.get("authorization") == "Bearer t0ken" for h in servicer.headers)
    assert len(servicer.requests) >= 4  # batches of at most 8
    ports = []
    for record in records:
        # The body is Hubble's flow-log line, as the file exporter writes it.
        response = json_format.Parse(record.body.string_value, observer_pb2.GetFlowsResponse())
        flow = response.flow
        assert response.node_name == NODE
        assert flow.source.pod_name == XWING.pod_name  # the deny list held (no tiefighter)
        assert record.time_unix_nano == flow.time.seconds * 10**9 + flow.time.nanos
        attributes = _attributes(record)
        assert attributes["flow.source.namespace"] == XWING.namespace
        assert attributes["flow.destination.pod_name"] == DEATHSTAR.pod_name
        if flow.verdict == flow_pb2.DROPPED:
            assert record.severity_number == logs_pb2.SEVERITY_NUMBER_WARN
            assert attributes["flow.verdict"] == "DROPPED"
            assert attributes["flow.drop_reason"] == "POLICY_DENIED"
        else:
            assert record.severity_number == logs_pb2.SEVERITY_NUMBER_INFO
            assert attributes["flow.verdict"] == "FORWARDED"
            assert "flow.drop_reason" not in attributes
        ports.append(flow.l4.TCP.source_port)
    assert ports == [2000 + i for i in range(40) if i % 5 != 4]
    drops = [
        p
        for p, r in zip(ports, records, strict=True)
        if _attributes(r)["flow.verdict"] == "DROPPED"
    ]
    assert drops == [2000 + i for i in range(0, 40, 4) if i % 5 != 4]


def test_an_absent_or_refusing_collector_costs_counted_records_only(
    short_tmp: Path, collector: tuple[Collector, str]
) -> None:
    servicer, endpoint = collector
    otlp = OtlpConfig(
        endpoint=endpoint, insecure=True, max_batch=5, attempts=2, retry_pause_s=0.01,
        timeout_s=2,
    )  # fmt: skip
    node, feed = _observer(short_tmp, otlp)
    exporter = node.exporters[0]
    sink = exporter.sink
    try:
        servicer.refuse = True
        feed.push(b"".join(event(src_port=3000 + i) for i in range(10)))
        poll("refused records counted", lambda: sink.lost == 10 or sink.lost)  # type: ignore[attr-defined]
        assert servicer.records() == []
        servicer.refuse = False
        servicer.reject = 2  # the next batch: 2 of its records rejected by the collector
        feed.push(b"".join(event(src_port=4000 + i) for i in range(10)))
        poll("delivered after the collector came back", lambda: sink.sent == 8 or sink.sent)  # type: ignore[attr-defined]
    finally:
        node.stop()
    assert sink.lost == 12  # type: ignore[attr-defined]
    ports = [
        json_format.Parse(
            r.body.string_value, observer_pb2.GetFlowsResponse()
        ).flow.l4.TCP.source_port
        for r in servicer.records()
    ]
    assert ports == [4000 + i for i in range(10)]  # the collector got them; it rejected 2


def test_an_endpoint_that_is_not_host_port_is_refused_by_name() -> None:
    for bad in ("collector", "collector:", ":4317", "collector:99999", "collector:otlp"):
        with pytest.raises(ValueError, match="otlp endpoint"):
            OtlpConfig(endpoint=bad)
