"""The flush: recompile what changed since the last one and report per-endpoint entry diffs.

Updates only mark work (`PendingWork`): which identities need a full compile, which only
gained or lost peers (a patch), which only gained twin peers (a clone). The flush does the
work, cheapest kind first, then reports each endpoint's entries added and removed. Pods of
an identity share its entries, so their diffs are computed once and shared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from septum.operator.engine.changes import ChangeSet
from septum.operator.engine.cluster import EndpointKey, PodKey
from septum.operator.engine.entries import UNENFORCED_POLICY, EntryDiff, IdentityPolicy, PolicyEntry
from septum.operator.engine.identitycompiler import CloneMemo, Delta, IdentityCompiler

# Each touched pod's policy before the update (None: the pod was not an endpoint).
Touched = dict[PodKey, IdentityPolicy | None]


@dataclass
class PendingWork:
    """What the updates since the last flush ask of it."""

    changes: ChangeSet = field(default_factory=ChangeSet)  # ipcache changes so far
    full: set[int] = field(default_factory=set)  # identities to compile in full
    # Subjects whose rules gained or lost these peer identities (and nothing else changed).
    peer_patch: dict[int, set[int]] = field(default_factory=dict)
    # Subjects that only need entries for a new identity copied from its twin: {(new, twin)}.
    clones: dict[int, set[tuple[int, int]]] = field(default_factory=dict)
    # New identities with a twin: they take the twin's compiled policy.
    twin_of: dict[int, int] = field(default_factory=dict)

    def take(self) -> PendingWork:
        """The work so far, leaving this object empty for the next updates."""
        taken = PendingWork(self.changes, self.full, self.peer_patch, self.clones, self.twin_of)
        self.changes, self.full, self.peer_patch, self.clones, self.twin_of = (
            ChangeSet(),
            set(),
            {},
            {},
            {},
        )
        return taken


class AuditModes:
    """Each endpoint's audit mode as last reported, to diff the audit flag of its entries."""

    def __init__(self) -> None:
        self.state: dict[PodKey, bool] = {}
        self.audited: set[PodKey] = set()  # the keys whose state is True

    def record(self, key: PodKey, audit: bool) -> None:
        self.state[key] = audit
        if audit:
            self.audited.add(key)
        else:
            self.audited.discard(key)

    def forget(self, key: PodKey) -> None:
        self.state.pop(key, None)
        self.audited.discard(key)


def flush(
    work: PendingWork,
    compiler: IdentityCompiler,
    identity_pods: Mapping[int, set[PodKey]],
    pod_identity: Mapping[PodKey, int],
    audits: AuditModes,
    audit_of: Callable[[PodKey], bool],
    touched: Touched,
) -> ChangeSet:
    """Do `work` and report the changes; `audit_of` gives a pod's current audit mode."""
    changes = work.changes
    peer_dirty = work.peer_patch
    full = work.full
    clone_dirty = work.clones
    deltas: dict[int, Delta] = {}
    clone_memo: CloneMemo = {}
    for subject, pairs in list(clone_dirty.items()):
        cloneable = (
            subject not in full and subject not in peer_dirty and compiler.can_clone(subject)
        )
        if not cloneable:
            peer_dirty.setdefault(subject, set()).update(new for new, _ in pairs)
            del clone_dirty[subject]
    dirty = full | peer_dirty.keys() | clone_dirty.keys()
    compiled = compiler.compiled
    old_policies = {n: compiled.get(n, UNENFORCED_POLICY) for n in dirty}
    twins = work.twin_of
    for number in dirty:
        if number in twins and number in identity_pods:
            continue  # after its twin, below
        if number not in identity_pods:
            compiler.drop(number)
        elif number in clone_dirty:
            deltas[number] = []
            compiled[number] = compiler.clone(
                number, clone_dirty[number], deltas[number], clone_memo
            )
        elif number not in full and number in compiled:
            old = compiled.get(number)
            compiler.delta = deltas[number] = []
            compiled[number] = compiler.compile_identity(number, None, old, peer_dirty[number])
            compiler.delta = None
        else:
            compiled[number] = compiler.compile_identity(number, None)
    for number, twin in sorted(twins.items()):
        if number in identity_pods:
            compiled[number] = compiler.adopt(number, twin)
    changes.recompiled_identities = len(dirty)
    differ = _Differ(deltas)
    for number in dirty:
        old = old_policies[number]
        new = compiled.get(number)
        if new is None or old is new:
            continue
        patched = peer_dirty.get(number) if number not in full else None
        if number in clone_dirty:
            patched = {new for new, _ in clone_dirty[number]}
        plain: EntryDiff | None = None
        pods = identity_pods.get(number, set())
        if (
            patched is not None
            and pods
            and pods.isdisjoint(touched)
            and pods.isdisjoint(audits.audited)
        ):
            # The common case: every pod of the identity gets the same diff.
            plain = differ.patched(number, old, new, patched)
            if plain:
                changes.endpoints.update(dict.fromkeys(pods, plain))
            continue
        for key in pods:
            if key in touched:
                continue
            # Audit mode only changes through a touched pod or namespace, so the
            # state recorded at the last flush is current for untouched pods.
            audit = audits.state.get(key, False)
            if patched is not None and not audit:
                if plain is None:
                    plain = differ.patched(number, old, new, patched)
                result = plain
            else:
                result = differ.between(old, new, audit, audit)
            if result:
                changes.endpoints[key] = result
    for key, old_policy in touched.items():
        new_policy = (
            compiled.get(pod_identity[key], UNENFORCED_POLICY) if key in pod_identity else None
        )
        old_audit = audits.state.get(key, False)
        new_audit = audit_of(key)
        if new_policy is None:
            changes.removed_endpoints.add(key)
        result = differ.between(old_policy, new_policy, old_audit, new_audit)
        if result or new_policy is not None and old_policy is None:
            changes.endpoints[key] = result
    for key in touched:
        if key in pod_identity:
            audits.record(key, audit_of(key))
        else:
            audits.forget(key)
    for network in list(changes.ipcache_deletes):
        if network in changes.ipcache_upserts:
            changes.ipcache_deletes.discard(network)
    return changes


class _Differ:
    """Entry diffs of one flush, each computed once however many pods share it."""

    def __init__(self, deltas: dict[int, Delta]) -> None:
        # Delta items live until the flush ends, so their ids are unique keys.
        self._deltas = deltas
        self._by_policies: dict[tuple[int, int, bool], EntryDiff] = {}
        # Subjects that shared a clone share its delta items: diff them once.
        self._by_delta: dict[tuple[int, ...], EntryDiff] = {}

    def between(
        self,
        old: IdentityPolicy | None,
        new: IdentityPolicy | None,
        audit_old: bool,
        audit_new: bool,
    ) -> EntryDiff:
        cache_key = (id(old), id(new), audit_old)
        if audit_old == audit_new and cache_key in self._by_policies:
            return self._by_policies[cache_key]
        if audit_old or audit_new or old is None or new is None:
            old_entries = old.entries() if old else frozenset()
            new_entries = new.entries() if new else frozenset()
            if audit_old:
                old_entries = with_audit(old_entries)
            if audit_new:
                new_entries = with_audit(new_entries)
            result = EntryDiff.between(old_entries, new_entries)
        else:
            result = policy_diff(old, new)
        if audit_old == audit_new:
            self._by_policies[cache_key] = result
        return result

    def patched(
        self, number: int, old: IdentityPolicy, new: IdentityPolicy, peers: set[int]
    ) -> EntryDiff:
        """The entry diff of a peer patch or clone (no audit flag), from its reported delta."""
        delta = self._deltas.get(number)
        if not delta or None in delta:
            return peer_diff(old, new, peers)
        key = tuple(map(id, delta))
        found = self._by_delta.get(key)
        if found is None:
            found = self._by_delta[key] = delta_diff(delta) or peer_diff(old, new, peers)
        return found


def with_audit(entries: Iterable[PolicyEntry]) -> frozenset[PolicyEntry]:
    return frozenset(e._replace(audit=True) for e in entries)


def delta_diff(
    delta: Delta | None,
) -> EntryDiff | None:
    """The diff a peer patch reported directly; None if it had to recompile fully."""
    if delta is None or None in delta:
        return None
    removed: set[PolicyEntry] = set()
    added: set[PolicyEntry] = set()
    for item in delta:
        assert item is not None
        removed.update(item[0])
        added.update(item[1])
    if not removed or not added:
        return EntryDiff(frozenset(added), frozenset(removed))
    return EntryDiff(frozenset(added - removed), frozenset(removed - added))


def peer_diff(old: IdentityPolicy, new: IdentityPolicy, peers: set[int]) -> EntryDiff:
    """The diff of a patched policy: only the entries of `peers` can differ."""
    added: set[PolicyEntry] = set()
    removed: set[PolicyEntry] = set()
    for before, after in ((old.ingress, new.ingress), (old.egress, new.egress)):
        if before is after:
            continue
        if before.protocols != after.protocols or before.enforced != after.enforced:
            old_set, new_set = set(before.entries), set(after.entries)
        else:
            old_set, new_set = set(), set()
            for peer in peers:
                old_set.update(before.peer_entries(peer))
                new_set.update(after.peer_entries(peer))
        added |= new_set - old_set
        removed |= old_set - new_set
    return EntryDiff(frozenset(added), frozenset(removed))


def policy_diff(old: IdentityPolicy, new: IdentityPolicy) -> EntryDiff:
    """Diff direction by direction, skipping a direction whose entry tuple is unchanged."""
    added: set[PolicyEntry] = set()
    removed: set[PolicyEntry] = set()
    for before, after in ((old.ingress, new.ingress), (old.egress, new.egress)):
        if before is after or before.entries == after.entries:
            continue
        old_set, new_set = set(before.entries), set(after.entries)
        added |= new_set - old_set
        removed |= old_set - new_set
    return EntryDiff(frozenset(added), frozenset(removed))


def apply_diff(current: dict[EndpointKey, frozenset[PolicyEntry]], changes: ChangeSet) -> None:
    """Apply a ChangeSet to a per-endpoint entry view (what a datapath agent would do)."""
    for key, diff in changes.endpoints.items():
        entries = current.get(key, frozenset())
        current[key] = (entries - diff.removed) | diff.added
    for key in changes.removed_endpoints:
        current.pop(key, None)
