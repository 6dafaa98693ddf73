"""Twin identities: pod identities every cached selector treats alike.

Selectors read only the label keys they name, so two label sets equal on every key any
selector reads match exactly the same selectors. A new identity with such a twin (and the
same named ports) needs no compile of its own: every subject's entries for it, and its own
entries, are copies of the twin's. The index groups pod identities by that projection of
their labels; it is rebuilt lazily whenever the set of read keys changes.
"""

from __future__ import annotations

from collections.abc import Set

from septum.operator.engine.identities import IdentityTable
from septum.operator.engine.labels import LabelSet
from septum.operator.engine.selectorcache import SelectorCache

Projection = tuple[tuple[str, str], ...]


class TwinIndex:
    def __init__(self, selectors: SelectorCache, identities: IdentityTable) -> None:
        self._selectors = selectors
        self._identities = identities
        self._groups: dict[Projection, set[int]] | None = None  # None: to rebuild
        self._generation = -1  # the selector cache's key_generation the groups were built for

    def add(self, number: int, labels: LabelSet) -> None:
        if self._current():
            assert self._groups is not None
            self._groups.setdefault(self._project(labels), set()).add(number)

    def remove(self, number: int, labels: LabelSet) -> None:
        if self._current():
            assert self._groups is not None
            group = self._groups.get(self._project(labels))
            if group is not None:
                group.discard(number)

    def candidates(self, number: int, labels: LabelSet) -> Set[int]:
        """Pod identities projecting like `labels` (may include `number`): twins but for ports.

        The index's own set, in its own order (the first matching twin is taken): read only.
        """
        if not self._current():
            self._groups = {}
            self._generation = self._selectors.key_generation
            for other in self._identities.pod_ids:
                if other != number:
                    self.add(other, self._identities.labels[other])
        assert self._groups is not None
        return self._groups.get(self._project(labels), frozenset())

    def _current(self) -> bool:
        return self._groups is not None and self._generation == self._selectors.key_generation

    def _project(self, labels: LabelSet) -> Projection:
        reads = self._selectors.reads_key
        return tuple(item for item in labels.items if reads(item[0]))
