"""Flow logs to files in Hubble's exporter format, rotated by size.

Each line is one GetFlowsResponse as protobuf JSON (``{"flow": {...}, "node_name": ...,
"time": ...}``), as Hubble's file exporter writes it, so tools reading Hubble's flow logs
read Septum's. The options are Hubble's exporter options: file path, size at which the
file rotates (``max_size_mb``), how many rotated files are kept (``max_backups``), an
allow list and a deny list of flow filters, and a field mask (only these Flow fields are
written). Rotated files are named ``<stem>-<UTC time>.<suffix>`` beside the live file.

The exporter is one more follower of the ring (query.stream_ring with follow): it sees the
same flows and lost events any client does and never slows the ingest thread down; when it
falls behind, it writes the LostEvent it is told about. It hands each response to a sink:
the rotating file here, or OTLP logs to a collector (otlp.OtlpSink).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from google.protobuf import json_format
from google.protobuf.field_mask_pb2 import FieldMask

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.filters import FlowSelection
from septum.dataplane.observe.query import CaughtUp, FlowQuery, Paused, stream_ring
from septum.dataplane.observe.ring import FlowRing

log = logging.getLogger(__name__)


class ExportSelection(Protocol):
    """What every exporter's configuration says about which flows go out, and which fields."""

    @property
    def allow(self) -> Sequence[flow_pb2.FlowFilter]: ...

    @property
    def deny(self) -> Sequence[flow_pb2.FlowFilter]: ...

    @property
    def field_mask(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class ExportConfig:
    """Hubble's file exporter: --hubble-export-file-{path,max-size-mb,max-backups},
    --hubble-export-{allowlist,denylist,fieldmask}."""

    path: Path
    max_size_mb: float = 10.0
    max_backups: int = 5
    allow: Sequence[flow_pb2.FlowFilter] = ()
    deny: Sequence[flow_pb2.FlowFilter] = ()
    field_mask: Sequence[str] = field(default_factory=tuple)  # e.g. ("time", "verdict")


class RotatingFile:
    """An append-only text file that rotates at a size and keeps N rotated files."""

    def __init__(self, path: Path, max_bytes: int, max_backups: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.max_backups = max_backups
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        self._size = self.path.stat().st_size

    def write_line(self, line: str) -> None:
        data = line + "\n"
        size = len(data.encode())
        if self._size and self._size + size > self.max_bytes:
            self.rotate()
        self._file.write(data)
        self._size += size

    def rotate(self) -> None:
        self._file.close()
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime())
        millis = int(time.time() * 1000) % 1000
        target = self.path.with_name(f"{self.path.stem}-{stamp}.{millis:03d}{self.path.suffix}")
        os.replace(self.path, target)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._size = 0
        self.prune()

    def backups(self) -> list[Path]:
        pattern = f"{self.path.stem}-*{self.path.suffix}"
        return sorted(p for p in self.path.parent.glob(pattern) if p != self.path)

    def prune(self) -> None:
        backups = self.backups()
        for old in backups[: max(0, len(backups) - self.max_backups)]:
            old.unlink(missing_ok=True)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def masked(response: observer_pb2.GetFlowsResponse, mask: FieldMask | None) -> None:
    """Keep only the mask's Flow fields (Hubble's --hubble-export-fieldmask), in place."""
    if mask is not None and response.HasField("flow"):
        kept = flow_pb2.Flow()
        mask.MergeMessage(response.flow, kept)
        response.flow.CopyFrom(kept)


def json_line(response: observer_pb2.GetFlowsResponse) -> str:
    """One GetFlowsResponse as a line of Hubble's flow log."""
    # Hubble writes proto field names (pod_name, node_name), compact, one response a line.
    body = json_format.MessageToDict(response, preserving_proto_field_name=True)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def response_json(data: bytes, mask: FieldMask | None) -> str:
    """One serialized GetFlowsResponse as a line of Hubble's flow log."""
    response = observer_pb2.GetFlowsResponse.FromString(data)
    masked(response, mask)
    return json_line(response)


class FlowSink(Protocol):
    """Where an exporter's responses go: a file (FileSink) or an OTLP collector (otlp)."""

    def write(self, response: observer_pb2.GetFlowsResponse) -> None: ...

    def flush(self) -> None: ...  # the exporter caught up with the ring: send what waits

    def close(self) -> None: ...


class FileSink:
    """Hubble's flow-log lines into a RotatingFile."""

    def __init__(self, config: ExportConfig) -> None:
        self.file = RotatingFile(
            config.path, int(config.max_size_mb * (1 << 20)), config.max_backups
        )

    def write(self, response: observer_pb2.GetFlowsResponse) -> None:
        self.file.write_line(json_line(response))

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class FlowExporter:
    """Follows the ring and hands every selected flow (and lost event) to its sink: the
    rotating file of `ExportConfig` unless another sink is given (otlp.OtlpSink)."""

    def __init__(
        self,
        ring: FlowRing,
        node_name: str,
        config: ExportSelection,
        sink: FlowSink | None = None,
    ) -> None:
        self.ring = ring
        self.node_name = node_name
        self.config = config
        self.query = FlowQuery(
            number=0,
            first=False,
            follow=True,
            since_ns=None,
            until_ns=None,
            selection=FlowSelection(config.allow, config.deny),
        )
        self.mask = FieldMask(paths=list(config.field_mask)) if config.field_mask else None
        if self.mask is not None and not self.mask.IsValidForDescriptor(flow_pb2.Flow.DESCRIPTOR):
            raise ValueError(f"field_mask: {list(config.field_mask)} names no Flow field")
        if sink is None:
            if not isinstance(config, ExportConfig):
                raise TypeError("a FlowExporter without a sink needs an ExportConfig (a file)")
            sink = FileSink(config)
        self.sink = sink
        self.written = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        start = self.ring.head  # from now on: what was exported before is in older files
        stream = stream_ring(self.ring, self.query, self.node_name, start_seq=start)
        for item in stream:
            if self._stop.is_set():
                break
            if isinstance(item, Paused):
                continue
            if isinstance(item, CaughtUp):
                self.sink.flush()
                while not self._stop.is_set() and not self.ring.closed:
                    if self.ring.wait_for(int(item), 0.2):
                        break
                if self._stop.is_set() or self.ring.closed:
                    break
                continue
            response = observer_pb2.GetFlowsResponse.FromString(item)
            masked(response, self.mask)
            self.sink.write(response)
            self.written += 1
        self.sink.flush()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="flow-export", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.ring.wake_readers()
        if self._thread is not None:
            self._thread.join(10)
        self.sink.close()
