"""GetFlows filters as a SQL WHERE clause over the flows table (pure: no I/O).

Every value becomes a query parameter (``{p3:String}``): the SQL text holds only column
names and operators Septum wrote. A field is pushed down only where the SQL means exactly
what `filters` means on the rebuilt Flow; the rest stay in Python:

- whitelist: each filter's pushable fields ANDed; an unpushable field is left out, which
  only widens the SQL answer (the Python filter then narrows it exactly);
- blacklist: a filter is pushed only when all its fields are (leaving a field out of a
  NOT would wrongly narrow the answer); otherwise it is applied in Python only.

`Pushdown.exact` tells whether the SQL alone is the whole answer, so the reader can skip
rebuilding Flows to filter them. Lost-event rows always pass, as in the ring.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from septum.dataplane.observe.api.flow import flow_pb2

# Hubble's protocol filter names -> the IP protocol numbers our flows carry in l4.
_PROTOCOL_NUMBERS: dict[str, tuple[int, ...]] = {
    "tcp": (6,),
    "udp": (17,),
    "sctp": (132,),
    "icmpv4": (1,),
    "icmpv6": (58,),
    "icmp": (1, 58),
}
_PORTED = "protocol IN (6, 17, 132)"
# The verdict column of a lost-event row (the writer leaves it 0: VERDICT_UNKNOWN).
LOST_ROW_VERDICT = 0
_V4_MAPPED_PREFIX = ipaddress.IPv6Network("::ffff:0:0/96")


@dataclass
class Params:
    values: dict[str, int | str] = field(default_factory=dict)

    def add(self, value: int | str, sql_type: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"{{{name}:{sql_type}}}"

    def in_list(self, column: str, values: Iterable[int | str], sql_type: str) -> str:
        placeholders = ", ".join(self.add(v, sql_type) for v in values)
        return f"{column} IN ({placeholders})"


class _NotPushable(Exception):
    """This field (or this value of it) stays in Python."""


def _ip(values: Sequence[str], column: str, params: Params) -> str:
    terms = []
    for value in values:
        try:
            if "/" in value:
                net = ipaddress.ip_network(value, strict=False)
            else:
                address = ipaddress.ip_address(value)
                net = ipaddress.ip_network(address)
        except ValueError as err:  # filters.py refuses it with the field's name
            raise _NotPushable from err
        if isinstance(net, ipaddress.IPv4Network):
            low = ipaddress.IPv6Address(int(_V4_MAPPED_PREFIX.network_address) | int(net[0]))
            high = ipaddress.IPv6Address(int(_V4_MAPPED_PREFIX.network_address) | int(net[-1]))
            version = 1
        else:
            low, high, version = net[0], net[-1], 2
        low_sql, high_sql = params.add(str(low), "String"), params.add(str(high), "String")
        terms.append(
            f"(ip_version = {params.add(version, 'UInt8')} AND "
            f"{column} BETWEEN toIPv6({low_sql}) AND toIPv6({high_sql}))"
        )
    return "(" + " OR ".join(terms) + ")"


def _pods(values: Sequence[str], side: str, params: Params) -> str:
    namespace_column, pod_column = f"{side}_namespace", f"{side}_pod"
    terms = []
    for value in values:
        if not value:
            raise _NotPushable
        namespace, sep, prefix = value.partition("/")
        if not sep:  # "name" alone: a pod of the default namespace
            namespace, prefix = "default", namespace
        parts = []
        if namespace:
            parts.append(f"{namespace_column} = {params.add(namespace, 'String')}")
        if prefix:
            parts.append(f"startsWith({pod_column}, {params.add(prefix, 'String')})")
        terms.append("(" + (" AND ".join(parts) or "1") + ")")
    # A flow without a pod on that side matches no pod filter.
    present = f"NOT ({namespace_column} = '' AND {pod_column} = '')"
    return f"({present} AND (" + " OR ".join(terms) + "))"


def _ports(values: Sequence[str], column: str, params: Params) -> str:
    ports = []
    for value in values:
        try:
            port = int(value, 10)
        except ValueError as err:
            raise _NotPushable from err
        if not 0 <= port <= 65535:
            raise _NotPushable
        ports.append(port)
    return f"({_PORTED} AND {params.in_list(column, ports, 'UInt16')})"


def _protocols(values: Sequence[str], params: Params) -> str:
    numbers: set[int] = set()
    for value in values:
        found = _PROTOCOL_NUMBERS.get(value.lower())
        if found is None:  # L7 names, or an unknown name filters.py refuses
            raise _NotPushable
        numbers.update(found)
    return params.in_list("protocol", sorted(numbers), "UInt8")


def _numbers(column: str, sql_type: str) -> Callable[[Sequence[int], Params], str]:
    return lambda values, params: params.in_list(column, [int(v) for v in values], sql_type)


def _booleans(column: str) -> Callable[[Sequence[bool], Params], str]:
    return lambda values, params: params.in_list(column, [1 if v else 0 for v in values], "UInt8")


# FlowFilter field name -> its SQL (each raises _NotPushable for values it cannot say).
_FIELDS: dict[str, Callable[[Sequence, Params], str]] = {  # type: ignore[type-arg]
    "source_ip": lambda v, p: _ip(v, "src_ip", p),
    "destination_ip": lambda v, p: _ip(v, "dst_ip", p),
    "source_pod": lambda v, p: _pods(v, "src", p),
    "destination_pod": lambda v, p: _pods(v, "dst", p),
    "source_port": lambda v, p: _ports(v, "src_port", p),
    "destination_port": lambda v, p: _ports(v, "dst_port", p),
    "protocol": _protocols,
    "verdict": _numbers("verdict", "UInt8"),
    "drop_reason_desc": _numbers("drop_reason", "UInt16"),
    "traffic_direction": _numbers("direction", "UInt8"),
    "source_identity": _numbers("src_identity", "UInt32"),
    "destination_identity": _numbers("dst_identity", "UInt32"),
    "ip_version": _numbers("ip_version", "UInt8"),
    "reply": _booleans("is_reply"),
}


@dataclass(frozen=True)
class Pushdown:
    where: str  # a boolean SQL expression ("1" when nothing could be pushed)
    params: dict[str, int | str]
    exact: bool  # the SQL alone selects exactly what the filters select


def _filter_sql(flow_filter: flow_pb2.FlowFilter, params: Params) -> tuple[str, bool]:
    """(AND of the pushable fields, whether every set field was pushable)."""
    terms: list[str] = []
    exact = True
    for descriptor, value in flow_filter.ListFields():
        translate = _FIELDS.get(descriptor.name)
        if translate is None:
            exact = False
            continue
        mark = dict(params.values)
        try:
            terms.append(translate(value, params))
        except _NotPushable:
            params.values = mark  # forget the parameters of the abandoned field
            exact = False
    return ("(" + " AND ".join(terms) + ")" if terms else "1"), exact


def pushdown(
    whitelist: Sequence[flow_pb2.FlowFilter],
    blacklist: Sequence[flow_pb2.FlowFilter],
    params: Params,
) -> Pushdown:
    """The filters' SQL (lost-event rows always pass); parameters are added to `params`."""
    exact = True
    clauses: list[str] = []
    if whitelist:
        ors = []
        for flow_filter in whitelist:
            sql, filter_exact = _filter_sql(flow_filter, params)
            exact = exact and filter_exact
            ors.append(sql)
        clauses.append("(" + " OR ".join(ors) + ")")
    for flow_filter in blacklist:
        mark = dict(params.values)
        sql, filter_exact = _filter_sql(flow_filter, params)
        if filter_exact:
            clauses.append(f"NOT {sql}")
        else:
            params.values = mark
            exact = False
    if not clauses:
        return Pushdown("1", params.values, exact)
    # Lost rows are written with verdict 0 (writer.encode_lost), and saying so lets the table's
    # key (hour, verdict, ...) prune: with a bare `kind = 'lost' OR ...` ClickHouse cannot
    # bound the verdict and reads every granule of the window.
    return Pushdown(
        f"((verdict = {LOST_ROW_VERDICT} AND kind = 'lost') OR (" + " AND ".join(clauses) + "))",
        params.values,
        exact,
    )
