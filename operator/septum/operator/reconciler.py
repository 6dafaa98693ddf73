"""The leader's work: identities for every label set in use, unused ones collected, policy status.

One task, one pass at a time: a pass reads the cluster view (kept by the watch handlers),
allocates what is missing, deletes identities unused for the grace period and brings each
policy's status to what the engine says. Passes are cheap when nothing changed (no writes:
each write is computed as a difference first), so any watch event may trigger one.
Followers run no passes; the replica that becomes leader first re-lists the identities.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import ClientError
from kubernetes_asyncio.client import ApiClient, CoreV1Api, CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from septum.operator import policystatus
from septum.operator.cache import (
    CLUSTER_NETWORK_POLICY,
    NETWORK_POLICY,
    ClusterCache,
    ObjectKey,
    selected_endpoints,
)
from septum.operator.engine.labels import LabelSet
from septum.operator.errors import IdentitySpaceFull, NotLeader, describe
from septum.operator.identities import IdentityStore

log = logging.getLogger(__name__)

# kubernetes_asyncio would send a dict as a JSON patch; its stubs omit `_content_type`.
MERGE_PATCH: dict[str, Any] = {"_content_type": "application/merge-patch+json"}
DEBOUNCE_S = 0.2


def _now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class GcClock:
    """When each identity was first seen unused (monotonic seconds); forgets on use."""

    grace_s: float
    unused_since: dict[int, float]

    def due(self, numbers_unused: set[int], now_s: float) -> list[int]:
        for number in list(self.unused_since):
            if number not in numbers_unused:
                del self.unused_since[number]
        for number in numbers_unused:
            self.unused_since.setdefault(number, now_s)
        return sorted(n for n, since in self.unused_since.items() if now_s - since >= self.grace_s)


class Reconciler:
    def __init__(
        self,
        api: ApiClient,
        cache: ClusterCache,
        identities: IdentityStore,
        *,
        is_leader: Callable[[], bool],
        gc_grace_s: float,
        instance: str,
    ) -> None:
        self._api = api
        self._custom = CustomObjectsApi(api)
        self._core = CoreV1Api(api)
        self.cache = cache
        self.identities = identities
        self.is_leader = is_leader
        self.gc = GcClock(gc_grace_s, {})
        self.instance = instance
        self.dirty = asyncio.Event()
        self._resync_needed = True
        self._validations: dict[ObjectKey, tuple[str, policystatus.Validation]] = {}
        self._events_posted: set[str] = set()
        self.passes = 0

    def poke(self) -> None:
        self.dirty.set()

    def leadership_changed(self, leader: bool) -> None:
        self._resync_needed = True
        self.gc.unused_since.clear()  # a new term measures unused time afresh
        self.poke()

    async def run(self) -> None:
        # Wake at least a few times per grace period, so collection is on time without events.
        idle_s = max(0.5, min(5.0, self.gc.grace_s / 4))
        while True:
            try:
                await asyncio.wait_for(self.dirty.wait(), idle_s)
            except TimeoutError:
                pass
            await asyncio.sleep(DEBOUNCE_S)  # let a burst of events land in one pass
            self.dirty.clear()
            if not self.is_leader():
                continue
            try:
                await self.reconcile_once()
            except NotLeader as err:
                log.info("pass stopped: %s", err)
            except IdentitySpaceFull as err:
                log.error("%s", err)
            except (ApiException, ClientError, OSError, TimeoutError) as err:
                log.warning("pass failed, retrying: %s", describe(err))
                await asyncio.sleep(1)
                self.poke()

    async def reconcile_once(self) -> None:
        if self._resync_needed:
            await self.identities.resync()
            self._resync_needed = False
        counts = self.cache.label_set_counts()
        await self._allocate(counts)
        await self._collect(counts)
        await self._policies(counts)
        self.passes += 1

    # ---- identities ----------------------------------------------------------

    async def _allocate(self, counts: Counter[LabelSet]) -> None:
        for labels in sorted(counts, key=str):
            if self.identities.lookup(labels) is None:
                await self.identities.ensure(labels, self.is_leader)

    async def _collect(self, counts: Counter[LabelSet]) -> None:
        unused = {n for labels, n in self.identities.by_labels.items() if labels not in counts}
        # Objects that lost to a twin (same labels, higher number) are unused too.
        unused |= set(self.identities.by_number) - set(self.identities.by_labels.values())
        due = self.gc.due(unused, time.monotonic())
        if not due:
            return
        # The view may lag (or still be filling after a start): check the API server's pods.
        in_use = await self._label_sets_in_use()
        for number in due:
            stored = self.identities.by_number.get(number)
            if stored is None:
                continue
            labels = LabelSet.of(stored.source, stored.labels)
            if labels in in_use and self.identities.lookup(labels) == number:
                self.gc.unused_since.pop(number, None)
                continue
            await self.identities.delete(number, self.is_leader)
            self.gc.unused_since.pop(number, None)

    async def _label_sets_in_use(self) -> set[LabelSet]:
        namespaces = await self._core.list_namespace()
        pods = await self._core.list_pod_for_all_namespaces()
        fresh = ClusterCache(self.cache.cluster_name, self.cache.label_filter)
        for ns in namespaces.items:
            fresh.namespace_event(None, self._api.sanitize_for_serialization(ns))
        for pod in pods.items:
            fresh.pod_event(None, self._api.sanitize_for_serialization(pod))
        return set(fresh.label_set_counts())

    # ---- policies --------------------------------------------------------------

    async def _policies(self, counts: Counter[LabelSet]) -> None:
        live = set(self.cache.policies)
        for key in list(self._validations):
            if key not in live:
                del self._validations[key]
        for key, obj in list(self.cache.policies.items()):
            await self._policy(key, obj, counts)

    def _validate(self, key: ObjectKey, obj: Mapping[str, Any]) -> policystatus.Validation:
        version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        cached = self._validations.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        validation = policystatus.validate(obj)
        self._validations[key] = (version, validation)
        return validation

    async def _policy(
        self, key: ObjectKey, obj: Mapping[str, Any], counts: Counter[LabelSet]
    ) -> None:
        resource = key[0]
        validation = self._validate(key, obj)
        now = _now_rfc3339()
        if resource == NETWORK_POLICY:  # no status upstream: an Event is all a user sees
            if not validation.valid:
                await self._post_event(obj, validation, now)
            return
        if policystatus.became_invalid(obj, validation):
            await self._post_event(obj, validation, now)
        if resource == CLUSTER_NETWORK_POLICY:  # upstream's status schema: conditions only
            desired = policystatus.conditions_only(obj, validation, now)
        else:
            policy = validation.policy or policystatus.last_valid_policy(obj)
            selected = selected_endpoints(policy, counts, self.cache.nodes) if policy else 0
            desired = policystatus.desired_status(obj, validation, selected, now)
        patch = policystatus.status_patch(obj.get("status"), desired)
        if patch is None:
            return
        if not self.is_leader():
            raise NotLeader("lost the lease before writing a policy status")
        updated = await self._patch_status(key, patch)
        if updated is not None and key in self.cache.policies:
            self.cache.policies[key] = updated
            log.info(
                "policy status written",
                extra={
                    "policy": f"{key[1]}/{key[2]}" if key[1] else key[2],
                    "kind": obj.get("kind"),
                    "valid": validation.valid,
                    "generation": validation.generation,
                },
            )

    async def _patch_status(
        self, key: ObjectKey, patch: dict[str, Any]
    ) -> Mapping[str, Any] | None:
        (group, version, plural), namespace, name = key
        try:
            if namespace:
                result = await self._custom.patch_namespaced_custom_object_status(
                    group, version, namespace, plural, name, patch, **MERGE_PATCH
                )
            else:
                result = await self._custom.patch_cluster_custom_object_status(
                    group, version, plural, name, patch, **MERGE_PATCH
                )
        except ApiException as err:
            if err.status in (404, 409):
                return None  # deleted meanwhile, or a newer version to come through the watch
            raise
        return result if isinstance(result, Mapping) else None

    async def _post_event(
        self, obj: Mapping[str, Any], validation: policystatus.Validation, now: str
    ) -> None:
        event = policystatus.invalid_event(obj, validation, now, self.instance)
        name = event["metadata"]["name"]
        if name in self._events_posted:
            return
        if not self.is_leader():
            raise NotLeader("lost the lease before posting an event")
        try:
            await self._core.create_namespaced_event(
                event["metadata"]["namespace"], cast(Any, event)
            )
        except ApiException as err:
            if err.status != 409:  # 409: posted before (by this replica or an earlier leader)
                raise
        self._events_posted.add(name)
        log.warning(
            "policy invalid: %s",
            validation.message,
            extra={"policy": (obj.get("metadata") or {}).get("name"), "kind": obj.get("kind")},
        )
