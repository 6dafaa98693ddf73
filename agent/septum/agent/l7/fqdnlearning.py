"""The DNS proxy's `learn` hook on the node: the FQDN cache, the policy update, the state file.

`learn` records an answer for the asking endpoint and, when that adds addresses, hands
every learned address to `apply` (the agent: the engine's toFQDNs selection, then the
datapath) and waits for it: the proxy releases the answer only after this returns.
New addresses are saved at once (a restarted agent must still allow what its pods were
told); a later expiry or a longer TTL is saved by `flush`, which the expiry loop calls.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from septum.agent.l7 import fqdnstore
from septum.agent.l7.dnsanswers import AnswerFacts
from septum.agent.l7.dnsproxy import DnsRequest
from septum.agent.l7.fqdncache import FqdnCache, IPAddress, LastActive

log = logging.getLogger(__name__)

Learned = Mapping[IPAddress, frozenset[str]]
Apply = Callable[[Learned], Awaitable[None] | None]
# The endpoint (e.g. "namespace/name") a pod address belongs to; None: not a local pod.
EndpointOf = Callable[[str], str | None]
EXPIRY_INTERVAL_S = 1.0


class FqdnLearning:
    def __init__(
        self,
        cache: FqdnCache,
        apply: Apply,
        *,
        endpoint_of: EndpointOf = lambda address: address,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache = cache
        self._apply = apply
        self._endpoint_of = endpoint_of
        self._state_path = state_path
        self._clock = clock
        self._unsaved = False

    async def learn(self, request: DnsRequest, answer: AnswerFacts) -> None:
        endpoint = self._endpoint_of(request.client[0])
        if endpoint is None:
            log.info("DNS answer for %s: not a local endpoint, not learned", request.client[0])
            return
        now = self._clock()
        grew = False
        for name in answer.names:
            grew |= self.cache.learn(endpoint, name, answer.addresses, now)
        self._unsaved = True
        if grew:
            await self.publish()
            self.flush()

    async def publish(self) -> None:
        """Hand the whole learned set to the policy side (also once at start)."""
        result = self._apply(self.cache.addresses())
        if inspect.isawaitable(result):
            await result

    async def expire(self, last_active: LastActive) -> bool:
        changed = self.cache.expire(self._clock(), last_active)
        if changed:
            self._unsaved = True
            await self.publish()
        return changed

    def flush(self) -> None:
        """Save the cache if it changed since the last save."""
        if self._state_path is not None and self._unsaved:
            fqdnstore.save(self._state_path, self.cache)
        self._unsaved = False

    async def run_expiry(
        self, last_active: LastActive, interval_s: float = EXPIRY_INTERVAL_S
    ) -> None:
        """Expire and save until cancelled (then save a last time)."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                await self.expire(last_active)
                self.flush()
        finally:
            self.flush()


__all__ = ["EXPIRY_INTERVAL_S", "Apply", "EndpointOf", "FqdnLearning", "Learned"]
