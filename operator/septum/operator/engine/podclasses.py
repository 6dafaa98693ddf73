"""The pod classes of the cluster, kept current: which class (label set) each pod belongs to.

`podclass` holds the pure rules (a pod's address blocks, a split class's labels); this
module keeps the bookkeeping they need across updates: each pod's own label set, the pods
of each label set, the named ports the label set's own identity stands for, each pod's
address blocks, and the prefixes that decide the blocks (every prefix an address-matching
CIDR peer names). It answers with the class each pod should be in; the engine turns those
answers into identities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from septum.operator.engine.cluster import Pod, PodKey
from septum.operator.engine.labels import LabelSet
from septum.operator.engine.podclass import NamedPorts, address_blocks, class_labels
from septum.operator.engine.rules import IPNetwork, Policy, pod_cidr_prefixes


class PodClasses:
    def __init__(self, pods: Mapping[PodKey, Pod]) -> None:
        self._pods = pods  # the engine's live store
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

    def count_prefixes(self, policy: Policy, step: int) -> bool:
        """Count the prefixes `policy`'s address-matching CIDR peers name; True when the set
        of them changed (then `reclassify`)."""
        moved = False
        for network in pod_cidr_prefixes(policy):
            before = self._prefix_refs[network]
            self._prefix_refs[network] = before + step
            if self._prefix_refs[network] <= 0:
                del self._prefix_refs[network]
            moved |= (before == 0) != (before + step == 0)
        if moved:
            self._prefixes = tuple(sorted(self._prefix_refs, key=str))
        return moved

    def reclassify(self) -> list[LabelSet]:
        """The named prefixes changed: every pod's blocks recomputed; the label sets whose
        every pod must be checked again (`targets(..., everyone=True)`)."""
        for key in self._base:
            self._blocks[key] = address_blocks(self._pods[key].ips, self._prefixes)
        return list(self._groups)

    def _reference_ports(self, base: LabelSet) -> NamedPorts | None:
        """The named ports the label set's own identity stands for: those of its first pod
        (by namespace/name) in the default address class; None if it has none."""
        defaults = [k for k in self._groups.get(base, ()) if self._blocks[k] is None]
        return self._pods[min(defaults)].named_ports if defaults else None

    def _class_of(self, key: PodKey, base: LabelSet, ports: NamedPorts | None) -> LabelSet:
        """The label set of the identity pod `key` gets: `base`, or its split class."""
        blocks = self._blocks[key]
        named = self._pods[key].named_ports
        if blocks is None and named == ports:
            return base
        return class_labels(base, blocks, named)
