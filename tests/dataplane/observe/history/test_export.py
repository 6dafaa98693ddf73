"""Flow logs: Hubble's JSON lines, rotated by size, filtered, field-masked."""

from __future__ import annotations

import json
from pathlib import Path

from google.protobuf import json_format
from observe_helpers import DEATHSTAR, TIEFIGHTER, XWING, decoder, event, poll

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.history.export import ExportConfig, FlowExporter
from septum.dataplane.observe.ring import FlowRing


def test_export_files_rotate_and_parse_as_hubble_flow_logs(short_tmp: Path) -> None:
    ring = FlowRing(decoder(), 4096)
    config = ExportConfig(
        path=short_tmp / "hubble" / "events.log",
        max_size_mb=0.02,  # ~20 KB a file
        max_backups=2,
        deny=[flow_pb2.FlowFilter(source_pod=["empire/"])],
    )
    exporter = FlowExporter(ring, "node-1", config)
    exporter.start()
    try:
        events = [
            event(XWING if i % 4 else TIEFIGHTER, DEATHSTAR, src_port=1000 + i) for i in range(400)
        ]
        ring.extend(r.EVENT.unpack(e) for e in events)
        poll("exported", lambda: exporter.written == 300 or exporter.written)
    finally:
        exporter.stop()
    files = sorted((short_tmp / "hubble").iterdir())
    assert len(files) == 3  # the live file and two rotated ones; older ones pruned
    lines = [line for path in files for line in path.read_text().splitlines()]
    assert 0 < len(lines) < 300
    ports = []
    for line in lines:
        response = json_format.Parse(line, observer_pb2.GetFlowsResponse())
        assert response.node_name == "node-1"
        assert response.flow.source.pod_name == XWING.pod_name  # the deny list held
        ports.append(response.flow.l4.TCP.source_port)
        assert json.loads(line)["flow"]["verdict"] == "FORWARDED"
    assert ports == sorted(ports) and ports[-1] == 1399  # the newest flows are kept


def test_field_mask_keeps_only_the_named_fields(short_tmp: Path) -> None:
    ring = FlowRing(decoder(), 64)
    config = ExportConfig(
        path=short_tmp / "e.log", field_mask=("time", "verdict", "source.pod_name")
    )
    exporter = FlowExporter(ring, "node-1", config)
    exporter.start()
    try:
        ring.extend([r.EVENT.unpack(event())])
        poll("exported", lambda: exporter.written == 1)
    finally:
        exporter.stop()
    flow = json.loads((short_tmp / "e.log").read_text())["flow"]
    assert set(flow) == {"time", "verdict", "source"}
    assert flow["source"] == {"pod_name": XWING.pod_name}
