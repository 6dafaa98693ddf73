"""Allocating numbers to label sets.

The interface is what a persistent implementation (Kubernetes objects, a later
issue) provides too. Numbers are stable for a label set while it is in use
(reference counted); a released number is not reused until the allocator has
handed out every other free number, which keeps stale datapath state harmless.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Protocol


class IdentitySpaceExhausted(RuntimeError):
    """Every number of the allocator's range is in use (a RuntimeError, as it was raised before)."""


class IdentityAllocator(Protocol):
    def acquire(self, key: Hashable) -> int:
        """Number for `key`, allocating on first use; each call adds one reference."""

    def release(self, key: Hashable) -> int | None:
        """Drop one reference; returns the number when it was freed, else None."""

    def lookup(self, key: Hashable) -> int | None: ...

    def preallocate(self, keys: Iterable[Hashable]) -> None:
        """Hand out numbers for `keys` in the given order without taking references."""


class InMemoryAllocator:
    def __init__(self, first: int, last: int) -> None:
        self._first = first
        self._last = last
        self._next = first
        self._numbers: dict[Hashable, int] = {}
        self._refs: dict[Hashable, int] = {}
        self._free: list[int] = []

    def _allocate(self) -> int:
        if self._next <= self._last:
            number = self._next
            self._next += 1
            return number
        if self._free:
            return self._free.pop(0)
        raise IdentitySpaceExhausted(f"identity space {self._first}-{self._last} exhausted")

    def preallocate(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            if key not in self._numbers:
                self._numbers[key] = self._allocate()
                self._refs[key] = 0

    def acquire(self, key: Hashable) -> int:
        number = self._numbers.get(key)
        if number is None:
            number = self._allocate()
            self._numbers[key] = number
            self._refs[key] = 0
        self._refs[key] += 1
        return number

    def release(self, key: Hashable) -> int | None:
        refs = self._refs.get(key)
        if refs is None:
            return None
        if refs > 1:
            self._refs[key] = refs - 1
            return None
        number = self._numbers.pop(key)
        del self._refs[key]
        self._free.append(number)
        return number

    def lookup(self, key: Hashable) -> int | None:
        return self._numbers.get(key)

    def in_use(self) -> dict[Hashable, int]:
        return dict(self._numbers)
