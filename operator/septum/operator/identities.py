"""Security identities persisted as SeptumIdentity objects: look up, allocate, delete.

The store keeps every replica's view of the objects (from watch events and its own writes);
only the leader calls `ensure` and `delete`. One identity per label set, ever:

- `ensure` re-reads the objects carrying the label set's hash from the API server before it
  creates one (a view that lags behind the server cannot make it allocate twice);
- a create that finds the number taken (AlreadyExists) takes the next free number;
- the leader is the only writer, and it stops writing before its lease can expire.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio.client import CustomObjectsApi
from kubernetes_asyncio.client.exceptions import ApiException

from septum.operator.engine.labels import LabelSet
from septum.operator.errors import IdentitySpaceFull, NotLeader
from septum.operator.identity.objects import (
    GROUP,
    HASH_LABEL,
    PLURAL,
    VERSION,
    InvalidIdentityObject,
    NumberCursor,
    StoredIdentity,
    identity_object,
    labels_hash,
    read_identity,
)
from septum.wellknown.reserved import CLUSTER_IDENTITY_MAX, CLUSTER_IDENTITY_MIN

log = logging.getLogger(__name__)


def _key(identity: StoredIdentity) -> LabelSet:
    return LabelSet.of(identity.source, identity.labels)


class IdentityStore:
    def __init__(
        self,
        api: CustomObjectsApi,
        *,
        first: int = CLUSTER_IDENTITY_MIN,
        last: int = CLUSTER_IDENTITY_MAX,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._api = api
        self._on_change = on_change
        self.by_number: dict[int, StoredIdentity] = {}
        self.by_labels: dict[LabelSet, int] = {}
        self._cursor = NumberCursor(first, last)

    # ---- the view ----------------------------------------------------------

    def lookup(self, labels: LabelSet) -> int | None:
        return self.by_labels.get(labels)

    def observe(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event of a SeptumIdentity."""
        name = str((obj.get("metadata") or {}).get("name", ""))
        if kind == "DELETED":
            if name.isdigit():
                self._forget(int(name))
        else:
            try:
                self._remember(read_identity(obj))
            except InvalidIdentityObject as err:
                log.warning("SeptumIdentity ignored: %s", err)
        self._on_change()

    def _remember(self, identity: StoredIdentity) -> None:
        old = self.by_number.get(identity.number)
        if old is not None and old != identity:
            self.by_labels.pop(_key(old), None)
        self.by_number[identity.number] = identity
        key = _key(identity)
        holder = self.by_labels.get(key)
        # Two objects for one label set would be a bug (or a split brain); the lowest
        # number wins everywhere, so every agent and replica picks the same one.
        if holder is None or identity.number < holder or holder not in self.by_number:
            self.by_labels[key] = identity.number
        self._cursor.seen(identity.number)

    def _forget(self, number: int) -> None:
        identity = self.by_number.pop(number, None)
        if identity is None:
            return
        key = _key(identity)
        if self.by_labels.get(key) == number:
            del self.by_labels[key]
            twins = [n for n, other in self.by_number.items() if _key(other) == key]
            if twins:
                self.by_labels[key] = min(twins)

    # ---- the API -------------------------------------------------------------

    async def resync(self) -> None:
        """Replace the view with a fresh list (the leader does it when it takes over)."""
        listing = await self._api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        self.by_number.clear()
        self.by_labels.clear()
        for obj in listing.get("items", []):
            try:
                self._remember(read_identity(obj))
            except InvalidIdentityObject as err:
                log.warning("SeptumIdentity ignored: %s", err)

    async def ensure(self, labels: LabelSet, may_write: Callable[[], bool]) -> int:
        """The identity number of `labels`, creating its SeptumIdentity if there is none."""
        known = self.lookup(labels)
        if known is not None:
            return known
        digest = labels_hash(labels.source, labels.items)
        listing = await self._api.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, label_selector=f"{HASH_LABEL}={digest}"
        )
        for obj in listing.get("items", []):
            try:
                self._remember(read_identity(obj))
            except InvalidIdentityObject as err:
                log.warning("SeptumIdentity ignored: %s", err)
        known = self.lookup(labels)
        if known is not None:
            return known
        while True:
            number = self._cursor.pick(set(self.by_number))
            if number is None:
                raise IdentitySpaceFull(f"no identity number is free for {labels}")
            if not may_write():
                raise NotLeader("lost the lease before allocating an identity")
            body = identity_object(number, labels.source, labels.items)
            try:
                created = await self._api.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
            except ApiException as err:
                if err.status != 409:
                    raise
                await self._learn(number)  # taken: its object tells us by whom
                known = self.lookup(labels)
                if known is not None:
                    return known
                continue
            self._remember(read_identity(created))
            log.info("identity allocated", extra={"identity": number, "labels": str(labels)})
            return number

    async def _learn(self, number: int) -> None:
        try:
            obj = await self._api.get_cluster_custom_object(GROUP, VERSION, PLURAL, str(number))
            self._remember(read_identity(obj))
        except (ApiException, InvalidIdentityObject):
            # Gone again, or not readable: skip the number this round either way.
            self._cursor.seen(number)

    async def delete(self, number: int, may_write: Callable[[], bool]) -> None:
        identity = self.by_number.get(number)
        if not may_write():
            raise NotLeader("lost the lease before deleting an identity")
        try:
            await self._api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, str(number))
        except ApiException as err:
            if err.status != 404:
                raise
        self._forget(number)
        log.info(
            "identity deleted (unused)",
            extra={"identity": number, "labels": str(_key(identity)) if identity else ""},
        )
