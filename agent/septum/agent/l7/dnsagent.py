"""The agent's DNS proxy: the pieces of septum.agent.l7 joined to the agent's own state.

- rules: the compiler's merged rules.dns of each query (explain), cached until the node's
  policy revision moves;
- learning: the FQDN cache restored from the node's state directory and handed to the
  engine before the first load; each answer's addresses applied on the agent's loop (the
  compiler, then the datapath through the sync) before the pod gets the answer;
- idle grace: open connections read from the datapath's conntrack, at most once a second;
- flows and metrics: into the node Observer once it runs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry

from septum.agent.l7 import fqdnstore
from septum.agent.l7.dnsflows import FlowMetadata, dns_flow
from septum.agent.l7.dnsmetrics import DnsMetrics
from septum.agent.l7.dnsproxy import DnsEvent
from septum.agent.l7.dnsservice import DnsProxyService, on_loop
from septum.agent.l7.fqdncache import FqdnCache, FqdnConfig, IPAddress
from septum.agent.l7.fqdnconns import (
    ConnectionActivity,
    ConntrackEntries,
    EndpointOf,
    open_connections,
)
from septum.agent.l7.fqdnlearning import FqdnLearning, Learned
from septum.agent.l7.l7flows import FlowSink, L7FlowPublisher, RuleOf
from septum.operator.engine.rules import DnsRule


class Rules(Protocol):
    def l7_dns_rules(
        self, source: str, destination: str, port: int, protocol: str = ""
    ) -> tuple[DnsRule, ...]: ...

    def address_identity(self, address: str) -> int: ...

    def set_fqdn_addresses(self, learned: Learned) -> None: ...


class Conntrack(Protocol):
    def conntrack(self) -> ConntrackEntries: ...

    def jiffies(self) -> int: ...


class Observer(Protocol):
    """The node Observer's parts the flows and metrics go to."""

    @property
    def ring(self) -> FlowSink: ...

    @property
    def metadata(self) -> FlowMetadata: ...

    @property
    def registry(self) -> CollectorRegistry: ...


class CachedRules:
    """The compiler's rules.dns per (client, server, port), dropped when `generation` moves."""

    def __init__(self, compiler: Rules, generation: Callable[[], int]) -> None:
        self._compiler = compiler
        self._generation = generation
        self._seen = -1
        self._cache: dict[tuple[str, str, int, str], tuple[DnsRule, ...]] = {}

    def __call__(
        self, client: str, server: str, port: int, protocol: str = ""
    ) -> tuple[DnsRule, ...]:
        generation = self._generation()
        if generation != self._seen:
            self._cache = {}
            self._seen = generation
        key = (client, server, port, protocol)
        rules = self._cache.get(key)
        if rules is None:
            rules = self._cache[key] = self._compiler.l7_dns_rules(client, server, port, protocol)
        return rules


def refreshing_activity(
    read_open: Callable[[], Iterable[tuple[str, IPAddress]]],
    clock: Callable[[], float] = time.time,
    every_s: float = 1.0,
) -> Callable[[str, IPAddress], float | None]:
    """A `last_active` that sweeps the open connections again when asked `every_s` later."""
    activity = ConnectionActivity()
    swept = [float("-inf")]

    def last_active(endpoint: str, address: IPAddress) -> float | None:
        now = clock()
        if now - swept[0] >= every_s:
            activity.sweep(read_open(), now)
            swept[0] = now
        return activity.last_active(endpoint, address)

    return last_active


class ObserverReporter:
    """The proxy's `observe` hook: flows and metrics into whichever Observer runs now."""

    def __init__(
        self,
        observer: Callable[[], Observer | None],
        node_name: str,
        rule_of: RuleOf | None = None,
    ) -> None:
        self._observer = observer
        self._node_name = node_name
        self._rule_of = rule_of
        self._bound: tuple[int, L7FlowPublisher, DnsMetrics, FlowMetadata] | None = None

    def __call__(self, event: DnsEvent) -> None:
        observer = self._observer()
        if observer is None:
            return
        if self._bound is None or self._bound[0] != id(observer):
            metrics = DnsMetrics()
            observer.registry.register(metrics)
            # registry=None: the HTTP proxies' publisher already registered the HTTP metrics.
            publisher = L7FlowPublisher(
                observer.ring,
                node_name=self._node_name,
                metadata=observer.metadata,
                rule_of=self._rule_of,
            )
            self._bound = (id(observer), publisher, metrics, observer.metadata)
        _, publisher, metrics, metadata = self._bound
        flow = dns_flow(event, node_name=self._node_name, metadata=metadata)
        if flow is not None:
            publisher.publish(flow)
            metrics.observe(flow)


class LearnedNames:
    """`septum.dataplane.observe.fqdnnames.FqdnNames` over the DNS proxy's cache: the names
    a flow's pod learned for its peer (read from the Observer's threads)."""

    def __init__(self, cache: FqdnCache) -> None:
        self._cache = cache

    @property
    def generation(self) -> int:
        """The cache's: moves when a name is learned or expires (flows cached with names)."""
        return self._cache.generation

    def names_of(self, endpoint: str, address: str) -> list[str]:
        if not self._cache.lookups(endpoint):
            return []  # most flows: a pod that resolved nothing; no address parsing
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            return []
        return self._cache.names_of(endpoint, parsed)


def start_dns_proxy(
    compiler: Rules,
    *,
    port: int,
    state_dir: Path,
    endpoint_of: EndpointOf,
    reconcile: Callable[[], None],
    revision: Callable[[], int],
    conntrack: Conntrack,
    observer: Callable[[], Observer | None],
    node_name: str,
    config: FqdnConfig | None = None,
    rule_of: RuleOf | None = None,
) -> DnsProxyService:
    """Restore the learned state into the compiler and start the proxy (UDP and TCP on
    `port`: the L7 DNS entries' own port)."""
    state = state_dir / fqdnstore.STATE_FILE
    cache = fqdnstore.load(state, config)
    compiler.set_fqdn_addresses(cache.addresses())

    def apply(learned: Learned) -> None:
        compiler.set_fqdn_addresses(learned)
        reconcile()

    learning = FqdnLearning(
        cache,
        on_loop(asyncio.get_running_loop(), apply),
        endpoint_of=endpoint_of,
        state_path=state,
    )
    rules = CachedRules(compiler, revision)

    def read_open() -> set[tuple[str, IPAddress]]:
        entries = conntrack.conntrack()
        return open_connections(entries, conntrack.jiffies(), endpoint_of)

    def lookup(client: str, server: str, server_port: int, protocol: str) -> Sequence[DnsRule]:
        return rules(client, server, server_port, protocol)

    def identity_of(address: str) -> int | None:
        return compiler.address_identity(address)

    service = DnsProxyService(
        lookup,
        identity_of,
        learning,
        port=port,
        tcp=True,
        observe=ObserverReporter(observer, node_name, rule_of),
        last_active=refreshing_activity(read_open),
    )
    service.start()
    return service


__all__ = [
    "CachedRules",
    "ObserverReporter",
    "refreshing_activity",
    "start_dns_proxy",
]
