"""The identity table: every identity number with its labels, plus a label index.

Pod identities come from the cluster allocator (256 and up), CIDR identities
from the local allocator (1<<24 and up), reserved identities are fixed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator

from septum.operator.engine.errors import IdentitiesExhausted
from septum.operator.engine.labels import SOURCE_CIDR, SOURCE_K8S, SOURCE_RESERVED, LabelSet
from septum.operator.engine.podclass import is_split
from septum.operator.engine.rules import IPNetwork
from septum.operator.identity import IdentityAllocator, IdentitySpaceExhausted
from septum.wellknown.reserved import RESERVED, ReservedIdentity

WORLD_V4 = ipaddress.ip_network("0.0.0.0/0")
WORLD_V6 = ipaddress.ip_network("::/0")


def reserved_labels(name: str) -> LabelSet:
    return LabelSet.of(SOURCE_RESERVED, {name: ""})


def cidr_labels(network: IPNetwork) -> LabelSet:
    return LabelSet.of(SOURCE_CIDR, {str(network): ""})


class IdentityTable:
    def __init__(self, pod_allocator: IdentityAllocator, cidr_allocator: IdentityAllocator) -> None:
        self.pod_allocator = pod_allocator
        self.cidr_allocator = cidr_allocator
        self.labels: dict[int, LabelSet] = {}
        self.by_labels: dict[LabelSet, int] = {}
        # (key, value) -> pod identities carrying that label: narrows selector matching.
        self.index: dict[tuple[str, str], set[int]] = {}
        self.pod_ids: set[int] = set()
        self.cidr_ids: dict[IPNetwork, int] = {}
        for name, number in RESERVED.items():
            self._add(int(number), reserved_labels(name))

    def _add(self, number: int, labels: LabelSet) -> None:
        self.labels[number] = labels
        self.by_labels[labels] = number
        if labels.source == SOURCE_K8S:
            self.pod_ids.add(number)
            for item in labels.items:
                self.index.setdefault(item, set()).add(number)

    def _remove(self, number: int) -> LabelSet:
        labels = self.labels.pop(number)
        del self.by_labels[labels]
        if labels.source == SOURCE_K8S:
            self.pod_ids.discard(number)
            for item in labels.items:
                bucket = self.index.get(item)
                if bucket is not None:
                    bucket.discard(number)
                    if not bucket:
                        del self.index[item]
        return labels

    def _pod_allocator(self, labels: LabelSet) -> IdentityAllocator:
        """A split pod class (podclass) is node-local: numbered from the local range."""
        return self.cidr_allocator if is_split(labels) else self.pod_allocator

    def preallocate_pods(self, ordered: list[LabelSet]) -> None:
        self.pod_allocator.preallocate([s for s in ordered if not is_split(s)])
        self.cidr_allocator.preallocate([s for s in ordered if is_split(s)])

    def acquire_pod(self, labels: LabelSet) -> tuple[int, bool]:
        """Reference the identity of a pod label set; True when the number is new."""
        try:
            number = self._pod_allocator(labels).acquire(labels)
        except IdentitySpaceExhausted as err:
            raise IdentitiesExhausted(f"pod identities: {err}") from err
        is_new = number not in self.labels
        if is_new:
            self._add(number, labels)
        return number, is_new

    def release_pod(self, labels: LabelSet) -> int | None:
        """Drop a reference; returns the number if the identity is gone."""
        freed = self._pod_allocator(labels).release(labels)
        if freed is not None and freed in self.labels:
            self._remove(freed)
        return freed

    def acquire_cidr(self, network: IPNetwork) -> tuple[int, bool]:
        if network.prefixlen == 0:
            return int(
                ReservedIdentity.WORLD_IPV4 if network.version == 4 else ReservedIdentity.WORLD_IPV6
            ), False
        try:
            number = self.cidr_allocator.acquire(network)
        except IdentitySpaceExhausted as err:
            raise IdentitiesExhausted(f"CIDR identities for {network}: {err}") from err
        is_new = number not in self.labels
        if is_new:
            self._add(number, cidr_labels(network))
            self.cidr_ids[network] = number
        return number, is_new

    def release_cidr(self, network: IPNetwork) -> int | None:
        if network.prefixlen == 0:
            return None
        freed = self.cidr_allocator.release(network)
        if freed is not None:
            self._remove(freed)
            del self.cidr_ids[network]
        return freed

    def non_pod_ids(self) -> Iterator[int]:
        for number, labels in self.labels.items():
            if labels.source != SOURCE_K8S:
                yield number

    def candidates_any(self, alternatives: list[tuple[tuple[str, str], ...]]) -> set[int] | None:
        """Pod identities carrying one pair of every alternative (None: nothing narrows)."""
        result: set[int] | None = None
        for pairs in sorted(alternatives, key=len):
            found: set[int] = set()
            for pair in pairs:
                found |= self.index.get(pair, set())
            result = found if result is None else result & found
            if not result:
                return set()
        return result

    def candidates(self, keys: Iterable[tuple[str, str]]) -> set[int] | None:
        """Pod identities carrying all of `keys` (None when no key narrows the search)."""
        result: set[int] | None = None
        for key in keys:
            bucket = self.index.get(key, set())
            result = set(bucket) if result is None else result & bucket
            if not result:
                return set()
        return result
