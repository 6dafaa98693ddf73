"""Hubble `observe` flags -> GetFlowsRequest, without any I/O.

Mirrors the hubble CLI: a non-directional flag (--pod, --ip, --label, --port,
--identity) yields two filters, one matching the source side and one the
destination side; --from-*/--to-* go into both; --namespace scopes pods on the
matching side. `--not` negates the flag right after it (blacklist). Errors
name the flag at fault.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from septum.cli.hubble.errors import FlagError
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.wellknown.reserved import RESERVED

# Filter flags that take a value, in Hubble's spelling.
VALUE_FLAGS = (
    "namespace",
    "from-namespace",
    "to-namespace",
    "pod",
    "from-pod",
    "to-pod",
    "label",
    "from-label",
    "to-label",
    "ip",
    "from-ip",
    "to-ip",
    "snat-ip",
    "fqdn",
    "from-fqdn",
    "to-fqdn",
    "identity",
    "from-identity",
    "to-identity",
    "port",
    "from-port",
    "to-port",
    "verdict",
    "protocol",
    "type",
    "traffic-direction",
    "node-name",
    "http-status",
    "http-method",
    "http-path",
    "http-url",
    "http-header",
    "dns-query",
    "trace-id",
    "ip-trace-id",
    "tcp-flags",
    "ip-version",
    "uuid",
    "cel-expression",
)
BOOL_FLAGS = ("ipv4", "ipv6", "reply", "not-reply")

# Flags that may not be combined with each other in one (white- or black-) list.
CONFLICTS: tuple[tuple[str, ...], ...] = (
    ("from-fqdn", "from-ip", "ip", "fqdn", "from-namespace", "namespace"),
    ("from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"),
    ("to-fqdn", "to-ip", "ip", "fqdn", "to-namespace", "namespace"),
    ("to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"),
    ("to-pod", "namespace"),
    ("from-pod", "namespace"),
    ("label", "from-label"),
    ("label", "to-label"),
    ("port", "to-port"),
    ("port", "from-port"),
    ("identity", "to-identity"),
    ("identity", "from-identity"),
    ("reply", "not-reply"),
)

# Cilium monitor message types, as `--type` names them.
EVENT_TYPE_NAMES = {
    "drop": 1,
    "debug": 2,
    "capture": 3,
    "trace": 4,
    "policy-verdict": 5,
    "recorder": 6,
    "trace-sock": 7,
    "l7": 129,
    "agent": 130,
}
TRACE_POINT_NAMES = {
    "to-endpoint": 0,
    "to-proxy": 1,
    "to-host": 2,
    "to-stack": 3,
    "to-overlay": 4,
    "from-endpoint": 5,
    "from-proxy": 6,
    "from-host": 7,
    "from-stack": 8,
    "from-overlay": 9,
    "from-network": 10,
    "to-network": 11,
}
_TCP_FLAGS = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")


@dataclass
class _Side:
    """One of Hubble's filter trackers (whitelist or blacklist)."""

    left: flow_pb2.FlowFilter | None = None
    right: flow_pb2.FlowFilter | None = None
    ns: list[str] = field(default_factory=list)
    src_ns: list[str] = field(default_factory=list)
    dst_ns: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def both(self) -> list[flow_pb2.FlowFilter]:
        return [self.left_filter(), self.right_filter()]

    def left_filter(self) -> flow_pb2.FlowFilter:
        if self.left is None:
            self.left = flow_pb2.FlowFilter()
        return self.left

    def right_filter(self) -> flow_pb2.FlowFilter:
        if self.right is None:
            self.right = flow_pb2.FlowFilter()
        return self.right

    def filters(self) -> list[flow_pb2.FlowFilter]:
        if self.left is None and self.right is None and not (self.ns or self.src_ns or self.dst_ns):
            return []
        left, right = self.left_filter(), self.right_filter()
        for ff in (left, right):
            if self.dst_ns:
                _scope(ff.destination_pod, self.dst_ns)
            if self.src_ns:
                _scope(ff.source_pod, self.src_ns)
        if self.ns:
            _scope(left.source_pod, self.ns)
            _scope(right.destination_pod, self.ns)
        if left == right:
            return [left]
        return [left, right]


def _scope(pods: Any, namespaces: list[str]) -> None:
    """Qualify pod prefixes with each namespace ("" pod prefix = any pod)."""
    current = list(pods) or [""]
    scoped: list[str] = []
    for name in current:
        if "/" in name:
            scoped.append(name)
            continue
        scoped.extend(f"{ns}/{name}" for ns in namespaces)
    del pods[:]
    pods.extend(scoped)


def _check_conflicts(side: _Side) -> None:
    for group in CONFLICTS:
        present = [flag for flag in group if flag in side.changed]
        if len(present) > 1:
            raise FlagError(f"filters --{present[0]} and --{present[1]} cannot be combined")


def _identity(flag: str, value: str) -> int:
    if value in RESERVED:
        return int(RESERVED[value])
    try:
        return int(value)
    except ValueError:
        raise FlagError(
            f"--{flag}: invalid security identity {value!r}, expected one of "
            f"{sorted(RESERVED)} or a number"
        ) from None


def _event_type(value: str) -> flow_pb2.EventTypeFilter:
    kind, _, sub = value.partition(":")
    out = flow_pb2.EventTypeFilter()
    if kind in EVENT_TYPE_NAMES:
        out.type = EVENT_TYPE_NAMES[kind]
    elif kind.isdigit():
        out.type = int(kind)
    else:
        raise FlagError(f"--type: unknown type {kind!r}; known: {', '.join(EVENT_TYPE_NAMES)}")
    if sub:
        out.match_sub_type = True
        if out.type == 4 and sub in TRACE_POINT_NAMES:
            out.sub_type = TRACE_POINT_NAMES[sub]
        elif sub.isdigit():
            out.sub_type = int(sub)
        else:
            raise FlagError(f"--type: unknown sub-type {sub!r} of {kind!r}")
    return out


def _apply(side: _Side, flag: str, value: str | None) -> None:
    v = value or ""
    both = side.both
    if flag == "namespace":
        side.ns.append(v)
    elif flag == "from-namespace":
        side.src_ns.append(v)
    elif flag == "to-namespace":
        side.dst_ns.append(v)
    elif flag == "pod":
        side.left_filter().source_pod.append(v)
        side.right_filter().destination_pod.append(v)
    elif flag in ("from-pod", "to-pod"):
        for ff in both():
            (ff.source_pod if flag == "from-pod" else ff.destination_pod).append(v)
    elif flag == "label":
        side.left_filter().source_label.append(v)
        side.right_filter().destination_label.append(v)
    elif flag in ("from-label", "to-label"):
        for ff in both():
            (ff.source_label if flag == "from-label" else ff.destination_label).append(v)
    elif flag == "ip":
        side.left_filter().source_ip.append(v)
        side.right_filter().destination_ip.append(v)
    elif flag in ("from-ip", "to-ip"):
        for ff in both():
            (ff.source_ip if flag == "from-ip" else ff.destination_ip).append(v)
    elif flag == "snat-ip":
        for ff in both():
            ff.source_ip_xlated.append(v)
    elif flag == "fqdn":
        side.left_filter().source_fqdn.append(v)
        side.right_filter().destination_fqdn.append(v)
    elif flag in ("from-fqdn", "to-fqdn"):
        for ff in both():
            (ff.source_fqdn if flag == "from-fqdn" else ff.destination_fqdn).append(v)
    elif flag == "identity":
        ident = _identity(flag, v)
        side.left_filter().source_identity.append(ident)
        side.right_filter().destination_identity.append(ident)
    elif flag in ("from-identity", "to-identity"):
        ident = _identity(flag, v)
        for ff in both():
            (ff.source_identity if flag == "from-identity" else ff.destination_identity).append(
                ident
            )
    elif flag == "port":
        _port(flag, v)
        side.left_filter().source_port.append(v)
        side.right_filter().destination_port.append(v)
    elif flag in ("from-port", "to-port"):
        _port(flag, v)
        for ff in both():
            (ff.source_port if flag == "from-port" else ff.destination_port).append(v)
    elif flag == "verdict":
        if v not in flow_pb2.Verdict.keys():
            raise FlagError(
                f"--verdict: invalid value {v!r}; one of {', '.join(flow_pb2.Verdict.keys()[1:])}"
            )
        for ff in both():
            ff.verdict.append(flow_pb2.Verdict.Value(v))
    elif flag == "protocol":
        for ff in both():
            ff.protocol.append(v)
    elif flag == "type":
        parsed = _event_type(v)
        for ff in both():
            ff.event_type.append(parsed)
    elif flag == "traffic-direction":
        direction = {"ingress": flow_pb2.INGRESS, "egress": flow_pb2.EGRESS}.get(v.lower())
        if direction is None:
            raise FlagError(f"--traffic-direction: invalid value {v!r}; use ingress or egress")
        for ff in both():
            ff.traffic_direction.append(direction)
    elif flag == "node-name":
        for ff in both():
            ff.node_name.append(v)
    elif flag == "http-status":
        for ff in both():
            ff.http_status_code.append(v)
    elif flag == "http-method":
        for ff in both():
            ff.http_method.append(v)
    elif flag == "http-path":
        for ff in both():
            ff.http_path.append(v)
    elif flag == "http-url":
        for ff in both():
            ff.http_url.append(v)
    elif flag == "dns-query":  # FlowFilter.dns_query (Hubble's API; its 1.20 CLI has no flag)
        for ff in both():
            ff.dns_query.append(v)
    elif flag == "http-header":
        key, sep, header_value = v.partition(":")
        if not sep:
            raise FlagError(f"--http-header: invalid value {v!r}, expected name:value")
        for ff in both():
            ff.http_header.append(flow_pb2.HTTPHeader(key=key, value=header_value))
    elif flag == "trace-id":
        for ff in both():
            ff.trace_id.append(v)
    elif flag == "ip-trace-id":
        trace_id = _ip_trace_id(v)
        for ff in both():
            ff.ip_trace_id.append(trace_id)
    elif flag == "cel-expression":
        for ff in both():
            ff.experimental.cel_expression.append(v)
    elif flag == "uuid":
        for ff in both():
            ff.uuid.append(v)
    elif flag == "tcp-flags":
        flags = flow_pb2.TCPFlags()
        for name in v.split(","):
            if name.upper() not in _TCP_FLAGS:
                raise FlagError(f"--tcp-flags: unknown TCP flag {name!r}")
            setattr(flags, name.upper(), True)
        for ff in both():
            ff.tcp_flags.append(flags)
    elif flag in ("ip-version", "ipv4", "ipv6"):
        text = flag if flag != "ip-version" else v.lower()
        version = {"4": 1, "v4": 1, "ipv4": 1, "ip4": 1, "6": 2, "v6": 2, "ipv6": 2, "ip6": 2}.get(
            text
        )
        if version is None:
            raise FlagError(f"--ip-version: invalid value {v!r}; use 4 or 6")
        for ff in both():
            ff.ip_version.append(version)  # type: ignore[arg-type]
    elif flag in ("reply", "not-reply"):
        for ff in both():
            ff.reply.append(flag == "reply")
    else:  # pragma: no cover - the CLI only passes known flags
        raise FlagError(f"--{flag}: not a filter flag")


def _ip_trace_id(value: str) -> int:
    # Hubble refuses 0: a flow without an IP trace option reads as trace id 0.
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 2**64:
        raise FlagError(f"--ip-trace-id: invalid value {value!r}; want an integer from 1 to 2^64-1")
    return int(value)


def _port(flag: str, value: str) -> None:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise FlagError(f"--{flag}: invalid port {value!r}")


def build_filters(
    ordered: Sequence[tuple[str, str | None]],
) -> tuple[list[flow_pb2.FlowFilter], list[flow_pb2.FlowFilter]]:
    """(whitelist, blacklist) from filter flags in command-line order.

    `ordered` holds (flag, value) pairs; the pseudo-flag "not" negates the next one.
    Repeating a flag ORs its values, different flags AND.
    """
    white, black = _Side(), _Side()
    negate = False
    for flag, value in ordered:
        if flag == "not":
            if negate:
                raise FlagError("--not: two consecutive --not")
            negate = True
            continue
        side = black if negate else white
        negate = False
        if flag not in side.changed:
            side.changed.append(flag)
            _check_conflicts(side)
        _apply(side, flag, value)
    if negate:
        raise FlagError("--not: must be followed by a filter flag")
    return white.filters(), black.filters()


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_time(flag: str, value: str, now: datetime | None = None) -> datetime:
    """RFC 3339 time, or a Go-style duration meaning that long ago ("5m", "1h30m")."""
    now = now or datetime.now(UTC)
    if _DURATION.match(value):
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(value))
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FlagError(
            f"--{flag}: {value!r} is neither a time (2026-01-02T15:04:05Z) "
            "nor a duration (5m, 1h30m)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build_request(
    ordered: Sequence[tuple[str, str | None]],
    *,
    last: int | None = None,
    first: int | None = None,
    follow: bool = False,
    since: str | None = None,
    until: str | None = None,
    all_flows: bool = False,
) -> observer_pb2.GetFlowsRequest:
    """The GetFlowsRequest `hubble observe` would send for these flags."""
    if last is not None and first is not None:
        raise FlagError("flags --last and --first cannot be combined")
    if first is not None and follow:
        raise FlagError("flags --first and --follow cannot be combined")
    if until is not None and follow:
        raise FlagError("flags --until and --follow cannot be combined")
    for name, count in (("last", last), ("first", first)):
        if count is not None and count < 0:
            raise FlagError(f"--{name}: must be >= 0, got {count}")
    whitelist, blacklist = build_filters(ordered)
    request = observer_pb2.GetFlowsRequest(follow=follow, whitelist=whitelist, blacklist=blacklist)
    if first is not None:
        request.first = True
        request.number = first
    elif last is not None:
        request.number = last
    elif not (follow or since or until or all_flows):
        request.number = 20  # Hubble's default: the last 20 flows
    if since is not None:
        request.since.FromDatetime(parse_time("since", since))
    if until is not None:
        request.until.FromDatetime(parse_time("until", until))
    if request.HasField("since") and request.HasField("until"):
        if request.since.ToNanoseconds() > request.until.ToNanoseconds():
            raise FlagError("flags --since and --until: --since is after --until")
    return request
