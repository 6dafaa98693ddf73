"""Render GetFlowsResponse messages the way `hubble observe` does.

Formats: compact (one line per flow, coloured on a terminal), table, dict,
json and jsonpb (both one protojson GetFlowsResponse per line, field names as
in the .proto, as Hubble prints them). The writer is a parameter so tests
render into a buffer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

import click
from google.protobuf import json_format

from septum.cli.hubble.errors import FlagError
from septum.cli.hubble.flags import TRACE_POINT_NAMES
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.decoder import drop_reason_text
from septum.wellknown.reserved import RESERVED

FORMATS = ("compact", "table", "dict", "json", "jsonpb")
_RESERVED_NAMES = {int(identity): label for label, identity in RESERVED.items()}
_TRACE_NAMES = {v: k for k, v in TRACE_POINT_NAMES.items()}
_MATCH_NAMES = {0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all"}
_POLICY_VERDICTS = {
    flow_pb2.FORWARDED: "ALLOWED",
    flow_pb2.DROPPED: "DENIED",
    flow_pb2.AUDIT: "AUDITED",
}
_VERDICT_COLOURS = {
    "FORWARDED": "green",
    "ALLOWED": "green",
    "DROPPED": "red",
    "DENIED": "red",
    "AUDIT": "yellow",
    "AUDITED": "yellow",
    "ERROR": "red",
}


def _time(flow: flow_pb2.Flow) -> str:
    stamp = datetime.fromtimestamp(flow.time.seconds + flow.time.nanos / 1e9)
    return stamp.strftime("%b %d %H:%M:%S.") + f"{flow.time.nanos // 1_000_000:03d}"


def _port(flow: flow_pb2.Flow, source: bool) -> int:
    kind = flow.l4.WhichOneof("protocol")
    if kind in ("TCP", "UDP", "SCTP"):
        l4 = getattr(flow.l4, kind)
        return int(l4.source_port if source else l4.destination_port)
    return 0


def endpoint_text(flow: flow_pb2.Flow, source: bool) -> str:
    endpoint = flow.source if source else flow.destination
    ip = flow.IP.source if source else flow.IP.destination
    name = f"{endpoint.namespace}/{endpoint.pod_name}" if endpoint.pod_name else ip
    if ":" in name and not endpoint.pod_name:
        name = f"[{name}]"
    port = _port(flow, source)
    return f"{name}:{port}" if port else name


def identity_text(identity: int) -> str:
    return _RESERVED_NAMES.get(identity, f"ID:{identity}")


def type_text(flow: flow_pb2.Flow) -> str:
    kind = flow.event_type.type
    if kind == 1:
        return drop_reason_text(flow.drop_reason) or flow_pb2.DropReason.Name(flow.drop_reason_desc)
    if kind == 4:
        return _TRACE_NAMES.get(flow.event_type.sub_type, f"trace:{flow.event_type.sub_type}")
    if kind == 5:
        direction = flow_pb2.TrafficDirection.Name(flow.traffic_direction)
        return f"policy-verdict:{_MATCH_NAMES.get(flow.policy_match_type, 'none')} {direction}"
    return f"type:{kind}"


def verdict_text(flow: flow_pb2.Flow) -> str:
    if flow.event_type.type == 5:
        return _POLICY_VERDICTS.get(flow.verdict, flow_pb2.Verdict.Name(flow.verdict))
    return flow_pb2.Verdict.Name(flow.verdict)


def lost_text(lost: flow_pb2.LostEvent) -> str:
    cpu = f" CPU({lost.cpu.value})" if lost.HasField("cpu") else ""
    return f"EVENTS LOST: {flow_pb2.LostEventSource.Name(lost.source)}{cpu} {lost.num_events_lost}"


class Printer:
    def __init__(
        self,
        fmt: str,
        write: Callable[[str], None] | None = None,
        colour: bool | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise FlagError(f"--output: unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        self.fmt = fmt
        self._colour = colour
        self._write = write or (lambda line: click.echo(line, color=self._colour))
        self._rows: list[tuple[str, ...]] = []
        self._dict_count = 0

    def _style(self, text: str, **kwargs: object) -> str:
        if self._colour is False:
            return text
        return click.style(text, **kwargs)  # type: ignore[arg-type]

    def response(self, response: observer_pb2.GetFlowsResponse) -> None:
        if self.fmt in ("json", "jsonpb"):
            body = json_format.MessageToDict(response, preserving_proto_field_name=True)
            self._write(json.dumps(body, separators=(",", ":")))
            return
        kind = response.WhichOneof("response_types")
        if kind == "lost_events":
            self._lost(response.lost_events)
        elif kind == "flow":
            self._flow(response.flow)

    def _lost(self, lost: flow_pb2.LostEvent) -> None:
        text = lost_text(lost)
        if self.fmt == "table":
            self._rows.append(("", "", "", "EVENTS LOST", "", text))
        else:
            self._write(self._style(text, fg="yellow"))

    def _flow(self, flow: flow_pb2.Flow) -> None:
        src, dst = endpoint_text(flow, True), endpoint_text(flow, False)
        kind, verdict, summary = type_text(flow), verdict_text(flow), flow.Summary
        if self.fmt == "compact":
            colour = _VERDICT_COLOURS.get(verdict)
            src_id = identity_text(flow.source.identity)
            dst_id = identity_text(flow.destination.identity)
            arrow = "->"
            if not flow.HasField("is_reply"):
                arrow = "<>"  # direction unknown
            elif flow.is_reply.value:
                # A reply reads best from the connection's initiator, as Hubble prints it.
                src, dst, src_id, dst_id, arrow = dst, src, dst_id, src_id, "<-"
            self._write(
                f"{_time(flow)}: {self._style(src, fg='cyan')} ({src_id}) {arrow} "
                f"{self._style(dst, fg='magenta')} ({dst_id}) "
                f"{kind} {self._style(verdict, fg=colour) if colour else verdict} ({summary})"
            )
        elif self.fmt == "dict":
            if self._dict_count:
                self._write("------------")
            self._dict_count += 1
            for label, value in (
                ("TIMESTAMP", _time(flow)),
                ("SOURCE", src),
                ("DESTINATION", dst),
                ("TYPE", kind),
                ("VERDICT", verdict),
                ("SUMMARY", summary),
            ):
                self._write(f"{label:>11}: {value}")
        else:
            self._rows.append((_time(flow), src, dst, kind, verdict, summary))

    def close(self) -> None:
        """Flush formats that need every row first (table)."""
        if self.fmt != "table":
            return
        header = ("TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")
        rows = [header, *self._rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            self._write(
                "   ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        self._rows.clear()
