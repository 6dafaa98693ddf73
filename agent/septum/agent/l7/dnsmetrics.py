"""Hubble's `dns` metrics, counted from DNS flows as Hubble's dns handler counts them.

- `hubble_dns_queries_total{rcode, qtypes, ips_returned}`: request flows; a query the
  policy denied counts here with rcode "Policy denied".
- `hubble_dns_responses_total{rcode, qtypes, ips_returned}`: response flows, the rcode
  by Hubble's names ("No Error", "Non-Existent Domain", ...).
- `hubble_dns_response_types_total{type, qtypes}`: one per answer record type.
`qtypes` is the question types joined by ",", `ips_returned` the number of addresses.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from septum.dataplane.observe.api.flow import flow_pb2

# Hubble's names of DNS response codes (its metrics' `rcode` label values).
RCODE_NAMES = {
    0: "No Error",
    1: "Format Error",
    2: "Server Failure",
    3: "Non-Existent Domain",
    4: "Not Implemented",
    5: "Query Refused",
    6: "Name Exists when it should not",
    7: "RR Set Exists when it should not",
    8: "RR Set that should exist does not",
    9: "Not Authorized",
    10: "Name not contained in zone",
    11: "DSO-TYPE Not Implemented",
    16: "Bad OPT Version",
    17: "Key not recognized",
    18: "Signature out of time window",
    19: "Bad TKEY Mode",
    20: "Duplicate key name",
    21: "Algorithm not supported",
    22: "Bad Truncation",
    23: "Bad/missing Server Cookie",
}
POLICY_DENIED = "Policy denied"
_LABELS = ["rcode", "qtypes", "ips_returned"]


class DnsMetrics(Collector):
    def __init__(self, ignore_aaaa: bool = False) -> None:
        self._ignore_aaaa = ignore_aaaa  # Hubble's `dns:ignoreAAAA` option
        self._lock = threading.Lock()
        self._queries: Counter[tuple[str, str, str]] = Counter()
        self._responses: Counter[tuple[str, str, str]] = Counter()
        self._response_types: Counter[tuple[str, str]] = Counter()

    def observe(self, flow: flow_pb2.Flow) -> None:
        if not flow.HasField("l7") or flow.l7.WhichOneof("record") != "dns":
            return
        dns = flow.l7.dns
        if self._ignore_aaaa and list(dns.qtypes) == ["AAAA"]:
            return
        qtypes = ",".join(dns.qtypes)
        ips = str(len(dns.ips))
        with self._lock:
            if flow.verdict == flow_pb2.DROPPED:
                self._queries[(POLICY_DENIED, qtypes, ips)] += 1
            elif not flow.is_reply.value:
                self._queries[("", qtypes, ips)] += 1
            else:
                self._responses[(RCODE_NAMES.get(dns.rcode, ""), qtypes, ips)] += 1
                for rrtype in dns.rrtypes:
                    self._response_types[(rrtype, qtypes)] += 1

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            queries = dict(self._queries)
            responses = dict(self._responses)
            types = dict(self._response_types)
        family = CounterMetricFamily(
            "hubble_dns_queries", "Number of DNS queries observed", labels=_LABELS
        )
        for labels, count in sorted(queries.items()):
            family.add_metric(list(labels), count)
        yield family
        family = CounterMetricFamily(
            "hubble_dns_responses", "Number of DNS responses observed", labels=_LABELS
        )
        for labels, count in sorted(responses.items()):
            family.add_metric(list(labels), count)
        yield family
        family = CounterMetricFamily(
            "hubble_dns_response_types",
            "Number of DNS response types",
            labels=["type", "qtypes"],
        )
        for type_labels, count in sorted(types.items()):
            family.add_metric(list(type_labels), count)
        yield family


__all__ = ["POLICY_DENIED", "RCODE_NAMES", "DnsMetrics"]
