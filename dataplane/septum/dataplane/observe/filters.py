"""Hubble FlowFilter semantics, compiled once per request into predicates.

Within one FlowFilter every field that is set must match (AND) and a field
matches when any of its values does (OR). A flow passes a request when it
matches at least one whitelist filter (or there are none) and no blacklist
filter. Every field Hubble defines is evaluated; a value Septum cannot use
(bad address, pattern, regular expression, CEL expression) is refused naming
the field rather than ignored, because an ignored filter would silently widen
the answer.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Sequence

from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.errors import CelError, LabelSelectorError
from septum.dataplane.observe.errors import FilterError as FilterError
from septum.dataplane.observe.labels import label_map, parse_selector

FlowPredicate = Callable[[flow_pb2.Flow], bool]


# Cilium's monitor message type for L7 (access log) events: Hubble refuses an
# HTTP filter whose event_type filter could never let an L7 flow through.
_MESSAGE_TYPE_L7 = 129

_HTTP_STATUS_FULL = re.compile(r"^[1-5][0-9]{2}$")
_HTTP_STATUS_PREFIX = re.compile(r"^[1-5][0-9]?\+$")
_L4_PROTOCOLS = {"icmp", "icmpv4", "icmpv6", "tcp", "udp", "sctp", "vrrp", "igmp"}
_L7_PROTOCOLS = {"dns", "http"}
_TCP_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")


# Hubble's FQDN pattern language: lower-case letters, digits, "-", "_" and ".",
# with "*" standing for any run of letters, digits, "-" and "." (not "_").
_FQDN_PATTERN_CHAR = re.compile(r"[-0-9_a-z]")
_FQDN_WILDCARD = r"[-.0-9a-z]*"


@functools.lru_cache(maxsize=4096)
def _labels(labels: tuple[str, ...]) -> dict[str, str]:
    return label_map(labels)


def _ip_filter(values: Sequence[str], field: str, side: str) -> FlowPredicate:
    exact: set[str] = set()
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for value in values:
        try:
            if "/" in value:
                networks.append(ipaddress.ip_network(value, strict=False))
            else:
                exact.add(str(ipaddress.ip_address(value)))
        except ValueError as err:
            raise FilterError(f"{field}: {value!r} is not an IP address or CIDR") from err

    def match(flow: flow_pb2.Flow) -> bool:
        ip = getattr(flow.IP, side)
        if not ip:
            return False
        if ip in exact:
            return True
        if networks:
            address = ipaddress.ip_address(ip)
            return any(address in net for net in networks)
        return False

    return match


def _namespaced_filter(
    values: Sequence[str], field: str, getter: Callable[[flow_pb2.Flow], tuple[str, str]]
) -> FlowPredicate:
    wanted: list[tuple[str, str]] = []
    for value in values:
        if not value:
            raise FilterError(f"{field}: name must not be empty")
        namespace, sep, prefix = value.partition("/")
        # Hubble: "name" alone means the default namespace; "ns/" means any pod in ns.
        wanted.append((namespace, prefix) if sep else ("default", namespace))

    def match(flow: flow_pb2.Flow) -> bool:
        namespace, name = getter(flow)
        if not namespace and not name:
            return False
        return any(
            (not prefix or name.startswith(prefix)) and (not ns or ns == namespace)
            for ns, prefix in wanted
        )

    return match


def _label_filter(
    values: Sequence[str], field: str, getter: Callable[[flow_pb2.Flow], tuple[str, ...]]
) -> FlowPredicate:
    try:
        selectors = [parse_selector(value) for value in values]
    except LabelSelectorError as err:
        raise FilterError(f"{field}: {err}") from err
    return lambda flow: any(sel(_labels(tuple(getter(flow)))) for sel in selectors)


def _port_filter(values: Sequence[str], field: str, side: str) -> FlowPredicate:
    ports: set[int] = set()
    for value in values:
        try:
            port = int(value, 10)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise FilterError(f"{field}: invalid port {value!r}")
        ports.add(port)

    def match(flow: flow_pb2.Flow) -> bool:
        kind = flow.l4.WhichOneof("protocol")
        if kind not in ("TCP", "UDP", "SCTP"):
            return False
        return getattr(getattr(flow.l4, kind), side) in ports

    return match


def _protocol_filter(values: Sequence[str]) -> FlowPredicate:
    wanted: set[str] = set()
    for value in values:
        proto = value.lower()
        if proto not in _L4_PROTOCOLS | _L7_PROTOCOLS:
            raise FilterError(f"protocol: unknown protocol {value!r}")
        wanted.add(proto)

    def match(flow: flow_pb2.Flow) -> bool:
        kind = flow.l4.WhichOneof("protocol")
        names = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp", "ICMPv4": "icmpv4", "ICMPv6": "icmpv6"}
        name = names.get(kind or "")
        if name is not None:
            if name in wanted or (name.startswith("icmp") and "icmp" in wanted):
                return True
        record = flow.l7.WhichOneof("record") if flow.HasField("l7") else None
        return record is not None and record in wanted

    return match


def _tcp_flags_filter(values: Sequence[flow_pb2.TCPFlags]) -> FlowPredicate:
    wanted = [tuple(getattr(f, name) for name in _TCP_FLAG_NAMES) for f in values]

    def match(flow: flow_pb2.Flow) -> bool:
        if flow.l4.WhichOneof("protocol") != "TCP" or not flow.l4.TCP.HasField("flags"):
            return False
        flags = flow.l4.TCP.flags
        have = tuple(getattr(flags, name) for name in _TCP_FLAG_NAMES)
        # A filter matches when every flag it sets is set on the flow.
        return any(all(h or not w for w, h in zip(want, have, strict=True)) for want in wanted)

    return match


def _event_type_filter(values: Sequence[flow_pb2.EventTypeFilter]) -> FlowPredicate:
    wanted = [(f.type, f.match_sub_type, f.sub_type) for f in values]

    def match(flow: flow_pb2.Flow) -> bool:
        kind, sub = flow.event_type.type, flow.event_type.sub_type
        return any(t == kind and (not m or s == sub) for t, m, s in wanted)

    return match


def _workload_filter(values: Sequence[flow_pb2.Workload], side: str) -> FlowPredicate:
    wanted = [(w.name, w.kind) for w in values]

    def match(flow: flow_pb2.Flow) -> bool:
        for workload in getattr(flow, side).workloads:
            for name, kind in wanted:
                if (not name or name == workload.name) and (not kind or kind == workload.kind):
                    return True
        return False

    return match


def _http_status_filter(values: Sequence[str]) -> FlowPredicate:
    exact: set[str] = set()
    prefixes: list[str] = []
    for value in values:
        if _HTTP_STATUS_FULL.match(value):
            exact.add(value)
        elif _HTTP_STATUS_PREFIX.match(value):
            prefixes.append(value[:-1])
        else:
            raise FilterError(f"http_status_code: invalid status code {value!r} (want 404 or 4+)")

    def match(flow: flow_pb2.Flow) -> bool:
        if (
            not flow.HasField("l7")
            or flow.l7.WhichOneof("record") != "http"
            or not flow.l7.http.code
        ):
            return False
        code = str(flow.l7.http.code)
        return code in exact or any(code.startswith(p) for p in prefixes)

    return match


def _http_filter(values: Sequence[str], attr: str, field: str) -> FlowPredicate:
    if attr == "path":
        patterns = _regex_list(values, field)

        def match_path(flow: flow_pb2.Flow) -> bool:
            if not flow.HasField("l7") or flow.l7.WhichOneof("record") != "http":
                return False
            path = flow.l7.http.url.split("?", 1)[0]
            if "://" in path:
                path = "/" + path.split("://", 1)[1].partition("/")[2]
            return any(p.search(path) for p in patterns)

        return match_path
    methods = {v.upper() for v in values}
    return lambda flow: (
        flow.HasField("l7")
        and flow.l7.WhichOneof("record") == "http"
        and flow.l7.http.method.upper() in methods
    )


def _fqdn_pattern_regex(pattern: str) -> str:
    """One Hubble FQDN pattern as a regular expression; ValueError says what is wrong."""
    # Hubble trims blanks, one trailing dot (the DNS root) and case first.
    canonical = pattern.strip().removesuffix(".").lower()
    if not canonical:
        raise ValueError("empty pattern")
    if canonical.endswith("."):
        raise ValueError("multiple trailing dots in pattern")
    parts: list[str] = []
    for char in canonical:
        if char == "*":
            parts.append(_FQDN_WILDCARD)
        elif char == ".":
            parts.append(r"\.")
        elif _FQDN_PATTERN_CHAR.fullmatch(char):
            parts.append(char)
        else:
            raise ValueError(f"{char!r}: invalid character in pattern")
    return "".join(parts)


def _fqdn_filter(values: Sequence[str], field: str, side: str) -> FlowPredicate:
    regexes: list[str] = []
    for value in values:
        try:
            regexes.append(_fqdn_pattern_regex(value))
        except ValueError as err:
            raise FilterError(f"{field}: invalid FQDN pattern {value!r}: {err}") from err
    # Names are matched as the flow carries them: Hubble does not lower-case them.
    names_match = re.compile("(?:" + "|".join(regexes) + ")").fullmatch
    return lambda flow: any(names_match(name) for name in getattr(flow, side))


def _regex_list(values: Sequence[str], field: str) -> list[re.Pattern[str]]:
    patterns: list[re.Pattern[str]] = []
    for value in values:
        try:
            patterns.append(re.compile(value))
        except re.error as err:
            raise FilterError(f"{field}: invalid regular expression {value!r}: {err}") from err
    return patterns


def _l7_regex_filter(
    values: Sequence[str], field: str, record: str, text: Callable[[flow_pb2.Layer7], str]
) -> FlowPredicate:
    """Regexes over one text of an L7 record, unanchored like Go's MatchString."""
    patterns = _regex_list(values, field)

    def match(flow: flow_pb2.Flow) -> bool:
        if not flow.HasField("l7") or flow.l7.WhichOneof("record") != record:
            return False
        value = text(flow.l7)
        # Hubble skips HTTP records without a URL, but matches an empty DNS query.
        if not value and record == "http":
            return False
        return any(p.search(value) for p in patterns)

    return match


def _http_header_filter(values: Sequence[flow_pb2.HTTPHeader]) -> FlowPredicate:
    # Hubble compares both key and value exactly (case included): a header
    # matches when some filter pair equals it.
    wanted = {(h.key, h.value) for h in values}

    def match(flow: flow_pb2.Flow) -> bool:
        if not flow.HasField("l7") or flow.l7.WhichOneof("record") != "http":
            return False
        return any((h.key, h.value) in wanted for h in flow.l7.http.headers)

    return match


def _check_http_event_types(f: flow_pb2.FlowFilter) -> None:
    """Refuse HTTP fields next to an event_type filter that excludes L7 events, as Hubble does."""
    if not f.event_type or any(t.type == _MESSAGE_TYPE_L7 for t in f.event_type):
        return
    for name in ("http_status_code", "http_method", "http_path", "http_url", "http_header"):
        if len(getattr(f, name)):
            raise FilterError(
                f"{name}: filtering by HTTP fields requires the event_type filter "
                f"to include l7 events (type {_MESSAGE_TYPE_L7})"
            )


def _cel_filter(expressions: Sequence[str]) -> FlowPredicate:
    # Imported on first use: the CEL interpreter costs ~170 ms and ~18 MB that
    # an agent nobody asks for a CEL filter should not pay.
    from septum.dataplane.observe.celexpr import cel_filter, compile_expression

    programs = []
    for index, expression in enumerate(expressions):
        try:
            programs.append(compile_expression(expression))
        except CelError as err:
            raise FilterError(
                f"experimental.cel_expression[{index}]: invalid CEL expression "
                f"{expression!r}: {err}"
            ) from err
    return cel_filter(programs)


def _source_pod(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.source.namespace, flow.source.pod_name


def _destination_pod(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.destination.namespace, flow.destination.pod_name


def _source_service(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.source_service.namespace, flow.source_service.name


def _destination_service(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.destination_service.namespace, flow.destination_service.name


def compile_filter(flow_filter: flow_pb2.FlowFilter) -> FlowPredicate:
    """Compile one FlowFilter into a predicate; raises FilterError naming the field."""
    f = flow_filter
    _check_http_event_types(f)

    checks: list[FlowPredicate] = []
    if f.uuid:
        uuids = set(f.uuid)
        checks.append(lambda flow: flow.uuid in uuids)
    if f.source_ip:
        checks.append(_ip_filter(f.source_ip, "source_ip", "source"))
    if f.destination_ip:
        checks.append(_ip_filter(f.destination_ip, "destination_ip", "destination"))
    if f.source_ip_xlated:
        checks.append(_ip_filter(f.source_ip_xlated, "source_ip_xlated", "source_xlated"))
    if f.source_fqdn:
        checks.append(_fqdn_filter(f.source_fqdn, "source_fqdn", "source_names"))
    if f.destination_fqdn:
        checks.append(_fqdn_filter(f.destination_fqdn, "destination_fqdn", "destination_names"))
    if f.dns_query:
        checks.append(_l7_regex_filter(f.dns_query, "dns_query", "dns", lambda l7: l7.dns.query))
    if f.source_pod:
        checks.append(_namespaced_filter(f.source_pod, "source_pod", _source_pod))
    if f.destination_pod:
        checks.append(_namespaced_filter(f.destination_pod, "destination_pod", _destination_pod))
    if f.source_service:
        checks.append(_namespaced_filter(f.source_service, "source_service", _source_service))
    if f.destination_service:
        checks.append(
            _namespaced_filter(f.destination_service, "destination_service", _destination_service)
        )
    if f.source_label:
        checks.append(
            _label_filter(f.source_label, "source_label", lambda fl: tuple(fl.source.labels))
        )
    if f.destination_label:
        checks.append(
            _label_filter(
                f.destination_label, "destination_label", lambda fl: tuple(fl.destination.labels)
            )
        )
    if f.node_labels:
        checks.append(_label_filter(f.node_labels, "node_labels", lambda fl: tuple(fl.node_labels)))
    if f.source_workload:
        checks.append(_workload_filter(f.source_workload, "source"))
    if f.destination_workload:
        checks.append(_workload_filter(f.destination_workload, "destination"))
    if f.source_cluster_name:
        clusters = set(f.source_cluster_name)
        checks.append(lambda flow: flow.source.cluster_name in clusters)
    if f.destination_cluster_name:
        dclusters = set(f.destination_cluster_name)
        checks.append(lambda flow: flow.destination.cluster_name in dclusters)
    if f.traffic_direction:
        directions = set(f.traffic_direction)
        checks.append(lambda flow: flow.traffic_direction in directions)
    if f.verdict:
        verdicts = set(f.verdict)
        checks.append(lambda flow: flow.verdict in verdicts)
    if f.drop_reason_desc:
        reasons = set(f.drop_reason_desc)
        checks.append(lambda flow: flow.drop_reason_desc in reasons)
    if f.interface:
        wanted_ifaces = [(i.index, i.name) for i in f.interface]
        checks.append(
            lambda flow: any(
                (not idx or idx == flow.interface.index) and (not nm or nm == flow.interface.name)
                for idx, nm in wanted_ifaces
            )
        )
    if f.event_type:
        checks.append(_event_type_filter(f.event_type))
    if f.http_status_code:
        checks.append(_http_status_filter(f.http_status_code))
    if f.protocol:
        checks.append(_protocol_filter(f.protocol))
    if f.source_port:
        checks.append(_port_filter(f.source_port, "source_port", "source_port"))
    if f.destination_port:
        checks.append(_port_filter(f.destination_port, "destination_port", "destination_port"))
    if f.reply:
        replies = set(f.reply)
        checks.append(lambda flow: flow.HasField("is_reply") and flow.is_reply.value in replies)
    if f.source_identity:
        sids = set(f.source_identity)
        checks.append(lambda flow: flow.source.identity in sids)
    if f.destination_identity:
        dids = set(f.destination_identity)
        checks.append(lambda flow: flow.destination.identity in dids)
    if f.http_method:
        checks.append(_http_filter(f.http_method, "method", "http_method"))
    if f.http_path:
        checks.append(_http_filter(f.http_path, "path", "http_path"))
    if f.http_url:
        checks.append(_l7_regex_filter(f.http_url, "http_url", "http", lambda l7: l7.http.url))
    if f.http_header:
        checks.append(_http_header_filter(f.http_header))
    if f.trace_id:
        # Hubble compares with the flow's parent trace id, "" when it has none.
        trace_ids = set(f.trace_id)
        checks.append(lambda flow: flow.trace_context.parent.trace_id in trace_ids)
    if f.ip_trace_id:
        ip_trace_ids = set(f.ip_trace_id)
        checks.append(lambda flow: flow.ip_trace_id.trace_id in ip_trace_ids)
    if f.tcp_flags:
        checks.append(_tcp_flags_filter(f.tcp_flags))
    if f.node_name:
        checks.append(_node_name_filter(f.node_name))
    if f.ip_version:
        versions = set(f.ip_version)
        checks.append(lambda flow: flow.IP.ipVersion in versions)
    if f.encrypted:
        encrypted = set(f.encrypted)
        checks.append(lambda flow: flow.IP.encrypted in encrypted)
    if f.HasField("experimental") and f.experimental.cel_expression:
        checks.append(_cel_filter(f.experimental.cel_expression))

    if not checks:
        return lambda flow: True
    if len(checks) == 1:
        return checks[0]
    return lambda flow: all(check(flow) for check in checks)


def _node_name_filter(values: Sequence[str]) -> FlowPredicate:
    # Hubble node names are "cluster/node" patterns with * wildcards; a bare
    # name matches that node in any cluster.
    patterns = []
    for value in values:
        if not value:
            raise FilterError("node_name: pattern must not be empty")
        pattern = value if "/" in value else f"*/{value}"
        regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
        patterns.append(re.compile(regex))

    def match(flow: flow_pb2.Flow) -> bool:
        name = flow.node_name if "/" in flow.node_name else f"default/{flow.node_name}"
        return any(p.match(name) for p in patterns)

    return match


class FlowSelection:
    """A request's whitelist and blacklist, compiled."""

    def __init__(
        self,
        whitelist: Sequence[flow_pb2.FlowFilter] = (),
        blacklist: Sequence[flow_pb2.FlowFilter] = (),
    ) -> None:
        self._whitelist = [self._compile(f, "whitelist", i) for i, f in enumerate(whitelist)]
        self._blacklist = [self._compile(f, "blacklist", i) for i, f in enumerate(blacklist)]
        self.matches_everything = not self._whitelist and not self._blacklist

    @staticmethod
    def _compile(flow_filter: flow_pb2.FlowFilter, kind: str, index: int) -> FlowPredicate:
        try:
            return compile_filter(flow_filter)
        except FilterError as err:
            raise FilterError(f"{kind}[{index}].{err}") from err

    def __call__(self, flow: flow_pb2.Flow) -> bool:
        if self._whitelist and not any(match(flow) for match in self._whitelist):
            return False
        return not any(match(flow) for match in self._blacklist)
