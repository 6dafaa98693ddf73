"""The node's HTTP proxies as one service the agent starts: an egress proxy (client side) and
an ingress proxy (server side) on their own ports, so each knows whose rules it enforces;
IPv4 and IPv6 listeners each, on one uvloop event loop in a thread of its own.

The agent gives it `lookup(source, destination, port, ingress)`: the engine's merged HTTP
rules for that connection (explain's DirectionVerdict.l7_rules.http; empty = nothing allowed)
and `identity_of(address)`: the security identity the upstream mark carries.  Rules are asked
once per (client, server, port, direction) and kept until `invalidate()` (the agent calls it
when policies or identities change).  A restart loses nothing the datapath needs: connections
redirected while no listener exists fail closed, and the new listeners take new connections at
once (existing proxied connections end with the old process).

Not handled yet: an egress proxy's upstream that the server's ingress proxy takes again comes
from the node's address, so the ingress rules are asked for the node, not the original client
(Cilium keeps the client's address on that hop)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from septum.agent.l7.httpproxy import Connection, HttpProxy, HttpRecord
from septum.agent.l7.httprules import EngineHttpRule, HttpPolicy, policy_from_engine
from septum.agent.l7.proxyrouting import remember_early_demux
from septum.dataplane import l7redirect

Lookup = Callable[[str, str, int, bool], Sequence[EngineHttpRule]]


@dataclass(frozen=True)
class L7Ports:
    egress: int = 15080
    ingress: int = 15081
    dns: int = 15082  # the DNS proxy's (UDP and TCP): entries whose L7 rules are rules.dns


class L7ProxyService:
    def __init__(
        self,
        lookup: Lookup,
        identity_of: Callable[[str], int],
        *,
        ns: str | None = None,
        ports: L7Ports = L7Ports(),
        on_record: Callable[[HttpRecord, bool], None] | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self._lookup = lookup
        self._state_dir = state_dir
        self._identity_of = identity_of
        self._ns = ns
        self.ports = ports
        self._on_record = on_record
        self._cache: dict[tuple[str, str, int, bool], HttpPolicy] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxies: list[HttpProxy] = []
        self._listeners: list[socket.socket] = []

    def port_for(self, ingress: bool) -> int:
        """The l7_proxy_port the adapter writes for an L7 entry of that direction."""
        return self.ports.ingress if ingress else self.ports.egress

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def _policy(self, conn: Connection, ingress: bool) -> HttpPolicy:
        key = (conn.source, conn.destination, conn.destination_port, ingress)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = policy_from_engine(
                self._lookup(conn.source, conn.destination, conn.destination_port, ingress)
            )
            with self._lock:
                self._cache[key] = cached
        return cached

    def _policy_hook(self, ingress: bool) -> Callable[[Connection], HttpPolicy]:
        return lambda conn: self._policy(conn, ingress)

    def _record_hook(self, ingress: bool) -> Callable[[HttpRecord], None] | None:
        on_record = self._on_record
        if on_record is None:
            return None
        return lambda record: on_record(record, ingress)

    def start(self) -> None:
        """Routing, listeners (errors name the port) and the loop; returns once they serve."""
        before = l7redirect.install_proxy_routing(self._ns)
        if self._state_dir is not None and before is not None:
            remember_early_demux(self._state_dir, before)
        for port in (self.ports.egress, self.ports.ingress):
            for family in (socket.AF_INET, socket.AF_INET6):
                self._listeners.append(l7redirect.open_listener(port, family, ns=self._ns))
        import uvloop  # measured faster for this proxy (docs/benchmarks.md, septum bench l7)

        self._loop = uvloop.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="l7-proxy", daemon=True
        )
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the L7 proxy's event loop did not start")

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        for ingress in (False, True):
            proxy = HttpProxy(
                self._policy_hook(ingress),
                lambda conn: self._identity_of(conn.source),
                ingress=ingress,
                ns=self._ns,
                on_record=self._record_hook(ingress),
            )
            self._proxies.append(proxy)
            port = self.port_for(ingress)
            for listener in self._listeners:
                if listener.getsockname()[1] == port:
                    loop.run_until_complete(proxy.serve(listener))
        ready.set()
        loop.run_forever()

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:

            async def close() -> None:
                for proxy in self._proxies:
                    await proxy.close()

            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            loop.close()
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        self._proxies.clear()
        self._loop = None
        self._thread = None
