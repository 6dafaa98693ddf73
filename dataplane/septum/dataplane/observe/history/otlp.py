"""Flows as OpenTelemetry logs, sent to a collector over OTLP/gRPC.

Each exported GetFlowsResponse (a flow, or a lost-event report) becomes one LogRecord whose
body is the very line Hubble's flow log would hold (export.json_line), so whatever already
parses Hubble's flow logs parses the records' bodies. Beside it, a few attributes a log
backend can index without parsing the body: the verdict, the drop reason, the traffic
direction and each side's namespace and pod. `time_unix_nano` is the flow's time; severity
WARN for drops, errors and lost events, INFO otherwise. The resource names the sender
(`service.name` septum-agent, `k8s.node.name`); the instrumentation scope is `septum.flows`.

The sink is fed by an export.FlowExporter (a follower of the ring): it batches records and
sends a batch when it is full or when the exporter has caught up with the ring. A batch the
collector refuses or cannot take after a few tries is counted in `lost` (and the collector's
own partial-success rejections too), never silently dropped, and the exporter goes on with
the next: a slow or absent collector never slows the datapath reader (the follower falls
behind the ring and is told so with a LostEvent, which it exports in turn).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.history.export import json_line

log = logging.getLogger(__name__)

SCOPE: Final = "septum.flows"
SERVICE_NAME: Final = "septum-agent"
_WARN_VERDICTS: Final = frozenset({flow_pb2.DROPPED, flow_pb2.ERROR})


@dataclass(frozen=True)
class OtlpConfig:
    """Where and how flows go as OTLP logs. `endpoint` is host:port of a collector's OTLP/gRPC
    receiver (4317 by convention); TLS unless `insecure`, with `ca_file` as the roots when
    given (else the system's). allow/deny/field_mask as for the file exporter."""

    endpoint: str
    insecure: bool = False
    ca_file: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()  # e.g. (("authorization", "Bearer …"),)
    max_batch: int = 512
    timeout_s: float = 10.0
    attempts: int = 3  # per batch, with a doubling pause from retry_pause_s
    retry_pause_s: float = 0.5
    allow: Sequence[flow_pb2.FlowFilter] = ()
    deny: Sequence[flow_pb2.FlowFilter] = ()
    field_mask: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        host, sep, port = self.endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"otlp endpoint: {self.endpoint!r} is not host:port")
        if self.max_batch < 1:
            raise ValueError(f"otlp max_batch: {self.max_batch} is not a positive number")
        if self.attempts < 1:
            raise ValueError(f"otlp attempts: {self.attempts} is not a positive number")


def _text(key: str, value: str) -> common_pb2.KeyValue:
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def log_record(response: observer_pb2.GetFlowsResponse, observed_ns: int) -> logs_pb2.LogRecord:
    """One exported response as a LogRecord (pure)."""
    record = logs_pb2.LogRecord(
        observed_time_unix_nano=observed_ns,
        body=common_pb2.AnyValue(string_value=json_line(response)),
    )
    if response.HasField("flow"):
        flow = response.flow
        record.time_unix_nano = flow.time.seconds * 1_000_000_000 + flow.time.nanos
        warn = flow.verdict in _WARN_VERDICTS
        record.attributes.extend(
            [
                _text("flow.verdict", flow_pb2.Verdict.Name(flow.verdict)),
                _text("flow.traffic_direction", flow_pb2.TrafficDirection.Name(
                    flow.traffic_direction
                )),
                _text("flow.source.namespace", flow.source.namespace),
                _text("flow.source.pod_name", flow.source.pod_name),
                _text("flow.destination.namespace", flow.destination.namespace),
                _text("flow.destination.pod_name", flow.destination.pod_name),
            ]
        )  # fmt: skip
        if flow.drop_reason_desc:
            record.attributes.append(
                _text("flow.drop_reason", flow_pb2.DropReason.Name(flow.drop_reason_desc))
            )
    else:  # a lost-event report: flows are missing from this export
        lost = response.lost_events
        record.time_unix_nano = lost.last.seconds * 1_000_000_000 + lost.last.nanos
        warn = True
        record.attributes.append(
            common_pb2.KeyValue(
                key="flow.lost_events",
                value=common_pb2.AnyValue(int_value=lost.num_events_lost),
            )
        )
    record.severity_number = (
        logs_pb2.SEVERITY_NUMBER_WARN if warn else logs_pb2.SEVERITY_NUMBER_INFO
    )
    record.severity_text = "WARN" if warn else "INFO"
    return record


def _channel(config: OtlpConfig) -> grpc.Channel:
    if config.insecure:
        return grpc.insecure_channel(config.endpoint)
    roots = config.ca_file.read_bytes() if config.ca_file is not None else None
    return grpc.secure_channel(config.endpoint, grpc.ssl_channel_credentials(roots))


class OtlpSink:
    """A FlowSink sending LogRecords in batches; counts what it sent and what was lost."""

    def __init__(self, config: OtlpConfig, node_name: str, version: str = "") -> None:
        self.config = config
        self.resource = resource_pb2.Resource(
            attributes=[_text("service.name", SERVICE_NAME), _text("k8s.node.name", node_name)]
        )
        self.scope = common_pb2.InstrumentationScope(name=SCOPE, version=version)
        self.channel = _channel(config)
        self.stub = logs_service_pb2_grpc.LogsServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = tuple((k.lower(), v) for k, v in config.headers)
        self.batch: list[logs_pb2.LogRecord] = []
        self.sent = 0  # records the collector accepted
        self.lost = 0  # records refused, rejected or not deliverable

    def write(self, response: observer_pb2.GetFlowsResponse) -> None:
        self.batch.append(log_record(response, time.time_ns()))
        if len(self.batch) >= self.config.max_batch:
            self.flush()

    def flush(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        request = logs_service_pb2.ExportLogsServiceRequest(
            resource_logs=[
                logs_pb2.ResourceLogs(
                    resource=self.resource,
                    scope_logs=[logs_pb2.ScopeLogs(scope=self.scope, log_records=batch)],
                )
            ]
        )
        pause = self.config.retry_pause_s
        for attempt in range(1, self.config.attempts + 1):
            try:
                reply = self.stub.Export(
                    request, timeout=self.config.timeout_s, metadata=self.metadata or None
                )
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if attempt == self.config.attempts or code in _FINAL_CODES:
                    self.lost += len(batch)
                    log.warning(
                        "otlp %s: %d flow records lost after %d tries: %s",
                        self.config.endpoint, len(batch), attempt, code,
                    )  # fmt: skip
                    return
                time.sleep(pause)
                pause *= 2
                continue
            rejected = reply.partial_success.rejected_log_records
            if rejected:
                log.warning(
                    "otlp %s rejected %d of %d flow records: %s",
                    self.config.endpoint, rejected, len(batch),
                    reply.partial_success.error_message,
                )  # fmt: skip
            self.lost += rejected
            self.sent += len(batch) - rejected
            return

    def close(self) -> None:
        self.flush()
        self.channel.close()


# Answers a retry cannot change (OTLP's spec: retry only UNAVAILABLE, RESOURCE_EXHAUSTED,
# ABORTED, CANCELLED, DEADLINE_EXCEEDED, OUT_OF_RANGE, DATA_LOSS).
_FINAL_CODES: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)
