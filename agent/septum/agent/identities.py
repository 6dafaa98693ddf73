"""Identities as the operator allocated them: SeptumIdentity objects, watched.

Agents never allocate (the operator does, one number per label set, ever).  The engine
takes its pod identities from a `WatchedAllocator`, which answers from the watched
objects; a pod whose label set has no object yet is held back by the compiler until one
appears, so `acquire` is only asked for label sets the store knows.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

from septum.operator.engine.labels import SOURCE_K8S, LabelSet
from septum.operator.identity.objects import InvalidIdentityObject, read_identity


class UnknownIdentity(LookupError):
    """No SeptumIdentity object holds this label set (yet)."""


def parse_identity(obj: Mapping[str, Any]) -> tuple[int, LabelSet] | None:
    """(number, label set) of a SeptumIdentity object; None when it is not one we can use
    (a malformed object, or labels of another source than pods')."""
    try:
        stored = read_identity(obj)
    except InvalidIdentityObject:
        return None
    if stored.source != SOURCE_K8S:
        return None
    return stored.number, LabelSet.of(stored.source, stored.labels)


class IdentityStore:
    """The watched SeptumIdentity objects: label set <-> number.

    Two objects may hold one label set (two operators raced before the lease settled):
    the lowest number is the label set's identity, as the operator decides; the other
    stays known by number (its label set) until it is deleted.
    """

    def __init__(self) -> None:
        self.numbers: dict[LabelSet, int] = {}  # label set -> its identity (lowest number)
        self.labels: dict[int, LabelSet] = {}
        self._holders: dict[LabelSet, set[int]] = {}  # label set -> every number holding it

    def upsert(self, obj: Mapping[str, Any]) -> LabelSet | None:
        """Record an identity; returns its label set (None: not usable)."""
        parsed = parse_identity(obj)
        if parsed is None:
            return None
        number, labels = parsed
        old = self.labels.get(number)
        if old is not None and old != labels:
            self._release(number, old)
        self.labels[number] = labels
        holders = self._holders.setdefault(labels, set())
        holders.add(number)
        self.numbers[labels] = min(holders)
        return labels

    def delete(self, obj: Mapping[str, Any]) -> LabelSet | None:
        """Forget an identity; returns its label set (None: not one this store held)."""
        parsed = parse_identity(obj)
        if parsed is None:
            return None
        number, labels = parsed
        if self.labels.get(number) != labels:
            return None
        del self.labels[number]
        self._release(number, labels)
        return labels

    def _release(self, number: int, labels: LabelSet) -> None:
        holders = self._holders.get(labels, set())
        holders.discard(number)
        if holders:
            self.numbers[labels] = min(holders)
        else:
            self._holders.pop(labels, None)
            self.numbers.pop(labels, None)

    def lookup(self, labels: LabelSet) -> int | None:
        return self.numbers.get(labels)


class WatchedAllocator:
    """The engine's `IdentityAllocator` over an IdentityStore: lookups only, references
    counted so the engine learns when a number is no longer used on this agent."""

    def __init__(self, store: IdentityStore) -> None:
        self._store = store
        self._refs: dict[Hashable, int] = {}
        self._given: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> int:
        number = self._given.get(key)
        if number is None:
            number = self._store.lookup(key) if isinstance(key, LabelSet) else None
            if number is None:
                raise UnknownIdentity(f"no SeptumIdentity holds {key}")
            self._given[key] = number
        self._refs[key] = self._refs.get(key, 0) + 1
        return number

    def release(self, key: Hashable) -> int | None:
        refs = self._refs.get(key)
        if refs is None:
            return None
        if refs > 1:
            self._refs[key] = refs - 1
            return None
        del self._refs[key]
        return self._given.pop(key)

    def lookup(self, key: Hashable) -> int | None:
        given = self._given.get(key)
        if given is not None:
            return given
        return self._store.lookup(key) if isinstance(key, LabelSet) else None

    def preallocate(self, keys: Iterable[Hashable]) -> None:
        """Nothing to do: numbers come from the operator's objects."""
