"""The agent's glue for the DNS proxy: rules cached per policy revision, the conntrack
sweep at most once a second, flows and metrics into whichever Observer runs."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from prometheus_client import CollectorRegistry

from septum.agent.l7.dnsagent import CachedRules, ObserverReporter, refreshing_activity
from septum.agent.l7.dnsanswers import QueryFacts
from septum.agent.l7.dnsproxy import DnsEvent, DnsRequest
from septum.agent.l7.fqdncache import IPAddress
from septum.agent.l7.fqdnlearning import Learned
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.metadata import StaticMetadata
from septum.operator.engine.rules import DnsRule

PEER = ipaddress.ip_address("203.0.113.10")


class Compiler:
    def __init__(self) -> None:
        self.asked = 0

    def l7_dns_rules(
        self, source: str, destination: str, port: int, protocol: str = ""
    ) -> tuple[DnsRule, ...]:
        self.asked += 1
        return (DnsRule(match_name="api.example.com"),)

    def address_identity(self, address: str) -> int:
        return 1000

    def set_fqdn_addresses(self, learned: Learned) -> None:
        pass


def test_rules_are_asked_again_only_when_the_revision_moves() -> None:
    compiler, revision = Compiler(), [1]
    rules = CachedRules(compiler, lambda: revision[0])
    assert rules("10.0.0.5", "192.0.2.53", 53) == (DnsRule(match_name="api.example.com"),)
    rules("10.0.0.5", "192.0.2.53", 53)
    assert compiler.asked == 1
    revision[0] = 2
    rules("10.0.0.5", "192.0.2.53", 53)
    assert compiler.asked == 2


def test_conntrack_swept_at_most_every_second() -> None:
    now, reads = [100.0], []

    def read_open() -> Iterable[tuple[str, IPAddress]]:
        reads.append(now[0])
        return [("app/client", PEER)]

    last_active = refreshing_activity(read_open, clock=lambda: now[0])
    assert last_active("app/client", PEER) == 100.0
    now[0] = 100.5
    assert last_active("app/client", PEER) == 100.0  # not swept again yet
    now[0] = 101.0
    assert last_active("app/client", PEER) == 101.0
    assert reads == [100.0, 101.0]


class Observer:
    def __init__(self) -> None:
        self.flows: list[flow_pb2.Flow] = []
        self.metadata = StaticMetadata()
        self.registry = CollectorRegistry()

    @property
    def ring(self) -> Observer:
        return self

    def append_flow(self, flow: flow_pb2.Flow) -> None:
        self.flows.append(flow)


def test_reporter_waits_for_an_observer_and_follows_a_new_one() -> None:
    current: list[Observer | None] = [None]
    report = ObserverReporter(lambda: current[0], "n1")
    event = DnsEvent(
        DnsRequest(("10.0.0.5", 4000), ("192.0.2.53", 53), "udp"),
        QueryFacts("api.example.com.", ("A",)),
        True,
        False,
    )
    report(event)  # no Observer yet: nothing to do, nothing raised
    first, second = Observer(), Observer()
    current[0] = first
    report(event)
    current[0] = second
    report(event)
    assert len(first.flows) == 1 and len(second.flows) == 1
    queries = {"rcode": "", "qtypes": "A", "ips_returned": "0"}
    assert second.registry.get_sample_value("hubble_dns_queries_total", queries) == 1


def test_learned_names_give_flows_their_names() -> None:
    """The Observer's `fqdn_names`: the names a pod's lookups gave an address (--fqdn)."""
    import ipaddress as ip

    from septum.agent.l7.dnsagent import LearnedNames
    from septum.agent.l7.fqdncache import FqdnCache

    cache = FqdnCache()
    cache.learn("default/xwing", "api.outside.example.", [(ip.ip_address("203.0.113.10"), 30)], 0)
    names = LearnedNames(cache)
    assert names.names_of("default/xwing", "203.0.113.10") == ["api.outside.example"]
    assert names.names_of("default/xwing", "198.51.100.10") == []
    assert names.names_of("default/tiefighter", "203.0.113.10") == []
    assert names.names_of("default/xwing", "not an address") == []
