"""The pod classes of the cluster, kept current: which class (label set) each pod belongs to.

`podclass` holds the pure rules (a pod's address blocks, a split class's labels); this
module keeps the bookkeeping they need across updates: each pod's own label set, the pods
of each label set, the named ports the label set's own identity stands for, each pod's
address blocks, the prefixes that decide the blocks (every prefix an address-matching
CIDR peer names) and the filtered pod label keys upstream-API selectors name. It answers
with the class each pod should be in; the engine turns those answers into identities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from septum.operator.engine.cluster import Pod, PodKey
from septum.operator.engine.labels import LabelFilter, LabelSet
from septum.operator.engine.podclass import NamedPorts, OwnLabels, address_blocks, class_labels
from septum.operator.engine.rules import IPNetwork, Policy, own_label_keys, pod_cidr_prefixes


class PodClasses:
    def __init__(self, pods: Mapping[PodKey, Pod], label_filter: LabelFilter) -> None:
        self._pods = pods  # the engine's live store
        self._filter = label_filter
        self._own_refs: Counter[str] = Counter()
        self._own_keys: frozenset[str] = frozenset()
        self._base: dict[PodKey, LabelSet] = {}
        self._groups: dict[LabelSet, set[PodKey]] = {}
        self._base_ports: dict[LabelSet, NamedPorts | None] = {}
        self._blocks: dict[PodKey, str | None] = {}
        self._prefix_refs: Counter[IPNetwork] = Counter()
        self._prefixes: tuple[IPNetwork, ...] = ()

    def base_of(self, key: PodKey) -> LabelSet | None:
        """The label set pod `key` was joined with, if any."""
        return self._base.get(key)

    def join(self, pod: Pod, base: LabelSet) -> None:
        """Record `pod` (already in the store) as one of label set `base`'s pods."""
        self._base[pod.key] = base
        self._blocks[pod.key] = address_blocks(pod.ips, self._prefixes)
        self._groups.setdefault(base, set()).add(pod.key)

    def leave(self, key: PodKey) -> bool:
        """Take a pod out of its label set; True when pods of that set remain (and may move)."""
        base = self._base.pop(key)
        self._blocks.pop(key, None)
        group = self._groups[base]
        group.discard(key)
        if group:
            return True
        del self._groups[base]
        self._base_ports.pop(base, None)
        return False

    def targets(
        self, base: LabelSet, changed: PodKey | None, everyone: bool = False
    ) -> list[tuple[PodKey, LabelSet]]:
        """(pod, the label set of its class) for the pods of `base` to check: `changed` (a pod
        just updated), or every pod when the reference ports moved or `everyone`."""
        group = self._groups.get(base)
        if not group:
            return []
        ports = self._reference_ports(base)
        if everyone or base not in self._base_ports or self._base_ports[base] != ports:
            keys = sorted(group)
        else:
            keys = [changed] if changed is not None else []
        self._base_ports[base] = ports
        return [(key, self._class_of(key, base, ports)) for key in keys]

    def all_classes(self) -> dict[PodKey, LabelSet]:
        """Every joined pod's class (a full load)."""
        found: dict[PodKey, LabelSet] = {}
        for base, keys in self._groups.items():
            ports = self._base_ports[base] = self._reference_ports(base)
            for key in keys:
                found[key] = self._class_of(key, base, ports)
        return found

    def count_policy(self, policy: Policy, step: int) -> bool:
        """Count the prefixes `policy`'s address-matching CIDR peers name and the filtered
        label keys its pod selectors read; True when either set changed (then `reclassify`)."""
        prefixes_moved = _count(self._prefix_refs, pod_cidr_prefixes(policy), step)
        if prefixes_moved:
            self._prefixes = tuple(sorted(self._prefix_refs, key=str))
        keys = [k for k in own_label_keys(policy) if self._filter.own_selectable(k)]
        keys_moved = _count(self._own_refs, keys, step)
        if keys_moved:
            self._own_keys = frozenset(self._own_refs)
        return prefixes_moved or keys_moved

    def reclassify(self) -> list[LabelSet]:
        """The named prefixes or selected keys changed: every pod's blocks recomputed; the
        label sets whose every pod must be checked again (`targets(..., everyone=True)`)."""
        for key in self._base:
            self._blocks[key] = address_blocks(self._pods[key].ips, self._prefixes)
        return list(self._groups)

    def _reference_ports(self, base: LabelSet) -> NamedPorts | None:
        """The named ports the label set's own identity stands for: those of its first pod
        (by namespace/name) in the default address class with no selected own label; None
        if it has none."""
        defaults = [
            k for k in self._groups.get(base, ()) if self._blocks[k] is None and not self._own(k)
        ]
        return self._pods[min(defaults)].named_ports if defaults else None

    def _own(self, key: PodKey) -> OwnLabels:
        return self.own_labels(self._pods[key].labels)

    def own_labels(self, labels: Iterable[tuple[str, str]]) -> OwnLabels:
        """Those of a pod's `labels` whose keys are filtered but selected (its class keeps
        them)."""
        if not self._own_keys:
            return ()
        return tuple(sorted((k, v) for k, v in labels if k in self._own_keys))

    def _class_of(self, key: PodKey, base: LabelSet, ports: NamedPorts | None) -> LabelSet:
        """The label set of the identity pod `key` gets: `base`, or its split class."""
        blocks = self._blocks[key]
        named = self._pods[key].named_ports
        own = self._own(key)
        if blocks is None and named == ports and not own:
            return base
        return class_labels(base, blocks, named, own)


def _count(refs: Counter[Any], items: list[Any], step: int) -> bool:
    """Add `step` to each item's count; True when an item appeared or went."""
    moved = False
    for item in items:
        before = refs[item]
        refs[item] = before + step
        if refs[item] <= 0:
            del refs[item]
        moved |= (before == 0) != (before + step == 0)
    return moved
