"""Leader election over a coordination.k8s.io/v1 Lease: one operator replica acts at a time.

Every write goes through the API server's optimistic concurrency (the Lease's
resourceVersion), so two replicas never both believe a write of theirs took the lease.
A follower measures expiry on its own clock from the moment it saw the holder's record
change (as client-go does), never from the timestamps in the record: the replicas' clocks
need not agree. The leader acts only until `lease_s - margin_s` after the start of its last
successful renewal, which is before any follower can see the lease as expired.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import ClientError
from kubernetes_asyncio.client import CoordinationV1Api, V1Lease, V1LeaseSpec, V1ObjectMeta
from kubernetes_asyncio.client.exceptions import ApiException

from septum.operator.errors import describe

log = logging.getLogger(__name__)

LEASE_NAME = "septum-operator"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What a Lease says about its holder (the fields that tell a renewal apart)."""

    holder: str
    duration_s: int
    renew_time: str
    transitions: int


def may_take(record: LeaseRecord | None, observed_at_s: float, now_s: float, me: str) -> bool:
    """Whether `me` may write itself into the lease now.

    `observed_at_s` is when this replica first saw `record` (its own monotonic clock).
    """
    if record is None or not record.holder or record.holder == me:
        return True
    return now_s >= observed_at_s + record.duration_s


def _record(lease: V1Lease) -> LeaseRecord:
    spec = lease.spec or V1LeaseSpec()
    renew = spec.renew_time
    return LeaseRecord(
        holder=spec.holder_identity or "",
        duration_s=int(spec.lease_duration_seconds or 0),
        renew_time=renew.isoformat() if isinstance(renew, datetime.datetime) else str(renew),
        transitions=int(spec.lease_transitions or 0),
    )


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class LeaderElector:
    def __init__(
        self,
        api: CoordinationV1Api,
        namespace: str,
        identity: str,
        *,
        name: str = LEASE_NAME,
        lease_s: int = 15,
        renew_s: float = 5,
        retry_s: float = 2,
        margin_s: float = 2,
        on_change: Callable[[bool], None] = lambda _leader: None,
    ) -> None:
        self._api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_s = lease_s
        self.renew_s = renew_s
        self.retry_s = retry_s
        self.margin_s = margin_s
        self._on_change = on_change
        self._held_until = 0.0
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._was_leader = False
        self.attempted = asyncio.Event()  # set after the first try (for readiness)

    def is_leader(self) -> bool:
        return time.monotonic() < self._held_until

    async def run(self) -> None:
        """Acquire and renew forever (until cancelled)."""
        while True:
            try:
                await self._try_once()
            except ApiException as err:
                log.warning("lease %s/%s: %s", self.namespace, self.name, describe(err))
            except (ClientError, OSError, TimeoutError) as err:
                log.warning("lease %s/%s: %s", self.namespace, self.name, describe(err))
            self.attempted.set()
            self._report()
            await asyncio.sleep(self.renew_s if self.is_leader() else self.retry_s)

    def _report(self) -> None:
        leader = self.is_leader()
        if leader != self._was_leader:
            self._was_leader = leader
            log.info(
                "leadership %s",
                "acquired" if leader else "lost",
                extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity},
            )
            self._on_change(leader)

    async def _try_once(self) -> None:
        started = time.monotonic()
        try:
            lease = await self._api.read_namespaced_lease(self.name, self.namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            await self._create(started)
            return
        record = _record(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, started
        if not may_take(record, self._observed_at, started, self.identity):
            self._held_until = 0.0
            return
        spec = lease.spec or V1LeaseSpec()
        now = _utcnow()
        if record.holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = record.transitions + 1
        spec.holder_identity = self.identity
        spec.lease_duration_seconds = self.lease_s
        spec.renew_time = now
        lease.spec = spec
        try:
            # The read's resourceVersion rides along: a replica that wrote in between wins.
            await self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as err:
            if err.status != 409:
                raise
            self._held_until = 0.0
            return
        self._held_until = started + self.lease_s - self.margin_s

    async def _create(self, started: float) -> None:
        now = _utcnow()
        lease = V1Lease(
            metadata=V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=self.lease_s,
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            await self._api.create_namespaced_lease(self.namespace, lease)
        except ApiException as err:
            if err.status != 409:
                raise
            return  # another replica created it first
        self._held_until = started + self.lease_s - self.margin_s

    async def release(self) -> None:
        """Give the lease up (on shutdown) so that a follower takes over at once."""
        if not self.is_leader():
            return
        self._held_until = 0.0
        self._report()
        try:
            lease = await self._api.read_namespaced_lease(self.name, self.namespace)
            if (lease.spec and lease.spec.holder_identity) != self.identity:
                return
            lease.spec.holder_identity = ""
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _utcnow()
            await self._api.replace_namespaced_lease(self.name, self.namespace, lease)
        except (ApiException, ClientError, OSError, TimeoutError) as err:
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, describe(err))
