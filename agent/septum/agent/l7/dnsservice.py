"""The node's DNS proxy as one service the agent starts: behind the redirect, on its own
event loop in a thread of its own (as the HTTP proxies' service).

The agent gives it `lookup(client, server, port)`: the engine's merged `rules.dns` for that
query's egress entry (explain's DirectionVerdict.l7_rules.dns), asked once per (client,
server, port) until `invalidate()`; `identity_of(address)` for the upstream mark; and a
`FqdnLearning` whose `apply` runs on the agent's own loop (`on_loop`), which owns the
engine: the proxy waits for it before the pod gets its answer.

It takes the UDP port only by default: that port number's TCP listener is the HTTP egress
proxy's (one egress L7 port for both, UDP and TCP being separate), so DNS over TCP to a
port with DNS rules reaches the HTTP proxy until entries tell DNS and HTTP apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Sequence

from septum.agent.l7.dnsproxy import DnsListener, DnsProxy, DnsRequest, Observe
from septum.agent.l7.dnsredirect import IdentityOf, marked_upstream, serve_redirected
from septum.agent.l7.fqdncache import FqdnCache, LastActive
from septum.agent.l7.fqdnlearning import Apply, FqdnLearning, Learned
from septum.operator.engine.rules import DnsRule

# (client, server, server port, "UDP" or "TCP": the transport the query came over) -> rules
Lookup = Callable[[str, str, int, str], Sequence[DnsRule]]


def on_loop(loop: asyncio.AbstractEventLoop, apply: Callable[[Learned], None]) -> Apply:
    """`apply` run on `loop` (the agent's), awaited from the proxy's own loop."""

    def hop(learned: Learned) -> Awaitable[None]:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                apply(learned)
            except BaseException as err:  # handed to the waiting proxy, not lost here
                done.set_exception(err)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(run)
        return asyncio.wrap_future(done)

    return hop


class DnsProxyService:
    def __init__(
        self,
        lookup: Lookup,
        identity_of: IdentityOf,
        learning: FqdnLearning,
        *,
        port: int,
        ns: str | None = None,
        observe: Observe | None = None,
        tcp: bool = False,
        last_active: LastActive | None = None,
    ) -> None:
        self._lookup = lookup
        self._identity_of = identity_of
        self._learning = learning
        self.port = port
        self._ns = ns
        self._observe = observe
        self._tcp = tcp
        self._last_active = last_active
        self._cache: dict[tuple[str, str, int, str], Sequence[DnsRule]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: DnsListener | None = None
        self._expiry: asyncio.Task[None] | None = None

    @property
    def cache(self) -> FqdnCache:
        """What the proxy learned (per endpoint, name and address), for flows' names."""
        return self._learning.cache

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def _rules(self, request: DnsRequest) -> Sequence[DnsRule]:
        key = (request.client[0], request.server[0], request.server[1], request.transport.upper())
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = tuple(self._lookup(*key))
            with self._lock:
                self._cache[key] = cached
        return cached

    def start(self) -> None:
        """The loop, the listener (errors name the port) and the expiry; returns once serving."""
        import uvloop  # as the HTTP proxies (docs/benchmarks.md, septum bench l7)

        self._loop = uvloop.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="dns-proxy", daemon=True
        )
        self._thread.start()
        started.result(10)

    def _run(self, started: concurrent.futures.Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        proxy = DnsProxy(
            self._rules,
            learn=self._learning.learn,
            observe=self._observe or (lambda event: None),
            upstream=marked_upstream(self._identity_of, self._ns),
        )
        try:
            self._listener = loop.run_until_complete(
                serve_redirected(proxy, self.port, ns=self._ns, tcp=self._tcp)
            )
        except BaseException as err:
            started.set_exception(err)
            return
        if self._last_active is not None:
            self._expiry = loop.create_task(self._learning.run_expiry(self._last_active))
        started.set_result(None)
        loop.run_forever()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._expiry is not None:
                self._expiry.cancel()
            if self._listener is not None:
                await self._listener.close()

        if loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._learning.flush()
        self._loop = self._thread = None
        self._listener = None


__all__ = ["DnsProxyService", "Lookup", "on_loop"]
