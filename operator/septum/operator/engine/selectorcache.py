"""The selector cache: which identities each selector in use selects, kept current.

Modelled on Cilium's `pkg/policy/selectorcache.go`. Every selector a policy uses (a subject
selector, or the peers of a rule) is cached once with its selection, however many rules
share it. When an identity appears or disappears, the cache updates the selections it
belongs to and tells the caller which users (the subject identities whose rules read the
selection) must hear of it.

A new identity is offered only to the selectors that could match it: selectors are indexed
by one label `(key, value)` pair they require (a label index), so most selectors are never
evaluated for most identities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Set
from typing import NamedTuple

from septum.operator.engine.identities import IdentityTable
from septum.operator.engine.labels import SOURCE_K8S, LabelSet
from septum.operator.engine.matching import NodeView, peers_match
from septum.operator.engine.rules import Peers
from septum.operator.engine.selectors import Selector

# What a cached selector is: a subject's endpoint selector, or the peer list of a rule.
Matcher = Selector | Peers
# How a selector is watched: (label pairs it is indexed under, needs every pod identity
# offered, needs every non-pod identity offered).
WatchPlan = tuple[tuple[tuple[str, str], ...], bool, bool]

_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"


class SelectionChange(NamedTuple):
    """A selector's selection changed; `users` are the subjects that read it.

    `users` is the cache's live set: read it before the next change, do not keep it.
    """

    selector: Matcher
    added: frozenset[int]
    removed: frozenset[int]
    users: Set[int]


class SelectorCache:
    def __init__(self, identities: IdentityTable, nodes: NodeView) -> None:
        self._identities = identities
        # Node peers and address-matching CIDR peers select node identities by the nodes.
        self._nodes = nodes
        self._selections: dict[Matcher, frozenset[int]] = {}
        self._refs: Counter[Matcher] = Counter()
        self._users: dict[Matcher, set[int]] = {}
        # The label index: selectors by a label pair they require, and the selectors
        # every pod identity (or every non-pod identity) must be offered to.
        self._watch_by_label: dict[tuple[str, str], set[Matcher]] = {}
        self._watch_all_pods: set[Matcher] = set()
        self._watch_non_pod: set[Matcher] = set()
        # Label keys any cached selector reads, with how many selectors read each.
        self._key_refs: Counter[str] = Counter()
        self.key_generation = 0  # bumped whenever the set of read keys changes

    # ---- selections ------------------------------------------------------

    def selections(self, matcher: Matcher) -> frozenset[int]:
        """The identities `matcher` selects; the matcher must be in use (KeyError otherwise).

        The frozenset object changes only when the selection does, so `is` compares cheaply.
        """
        return self._selections[matcher]

    def get(self, matcher: Matcher) -> frozenset[int] | None:
        return self._selections.get(matcher)

    def in_use(self) -> list[Matcher]:
        return list(self._selections)

    def reads_key(self, key: str) -> bool:
        """Whether any cached selector reads label `key`."""
        return key in self._key_refs

    # ---- users -----------------------------------------------------------

    def add_user(self, matcher: Matcher, user: int) -> None:
        """Record that subject identity `user` has a rule reading `matcher`'s selection."""
        users = self._users.get(matcher)
        if users is None:
            users = self._users[matcher] = set()
        users.add(user)

    def users(self, matcher: Matcher) -> Set[int]:
        return self._users.get(matcher, frozenset())

    # ---- selectors coming and going ---------------------------------------

    def acquire(self, matcher: Matcher) -> None:
        """Take a reference; the first one computes the selection and indexes the selector."""
        self._refs[matcher] += 1
        if self._refs[matcher] > 1:
            return
        self._selections[matcher] = frozenset()
        self._count_keys(matcher, 1)
        self.refresh(matcher)
        for label_pairs, all_pods, non_pod in _watch_plans(matcher):
            for pair in label_pairs:
                self._watch_by_label.setdefault(pair, set()).add(matcher)
            if all_pods:
                self._watch_all_pods.add(matcher)
            if non_pod:
                self._watch_non_pod.add(matcher)

    def release(self, matcher: Matcher) -> None:
        """Drop a reference; the last one forgets the selector, its selection and its users."""
        self._refs[matcher] -= 1
        if self._refs[matcher] > 0:
            return
        del self._refs[matcher]
        del self._selections[matcher]
        self._count_keys(matcher, -1)
        self._users.pop(matcher, None)
        for label_pairs, _, _ in _watch_plans(matcher):
            for pair in label_pairs:
                bucket = self._watch_by_label.get(pair)
                if bucket is not None:
                    bucket.discard(matcher)
                    if not bucket:
                        del self._watch_by_label[pair]
        self._watch_all_pods.discard(matcher)
        self._watch_non_pod.discard(matcher)

    def refresh(self, matcher: Matcher) -> SelectionChange | None:
        """Recompute one selection from scratch (after something outside labels changed)."""
        labels = self._identities.labels
        new = frozenset(n for n in self._candidates(matcher) if self._matches(matcher, labels[n]))
        old = self._selections.get(matcher)
        if new == old:
            return None
        self._selections[matcher] = new
        old = old or frozenset()
        return SelectionChange(matcher, new - old, old - new, self.users(matcher))

    # ---- identities coming and going ---------------------------------------

    def identity_added(self, number: int) -> list[SelectionChange]:
        """Add a new identity to every selection it matches."""
        labels = self._identities.labels[number]
        added = frozenset((number,))
        changes: list[SelectionChange] = []
        for matcher in self._watchers(labels):
            if self._matches(matcher, labels):
                self._selections[matcher] = self._selections[matcher] | added
                changes.append(SelectionChange(matcher, added, frozenset(), self.users(matcher)))
        return changes

    def identity_removed(self, number: int) -> list[SelectionChange]:
        """Remove an identity that is going away from every selection holding it."""
        labels = self._identities.labels[number]
        removed = frozenset((number,))
        changes: list[SelectionChange] = []
        for matcher in self._watchers(labels):
            current = self._selections[matcher]
            if number in current:
                self._selections[matcher] = current - removed
                changes.append(SelectionChange(matcher, frozenset(), removed, self.users(matcher)))
        return changes

    # ---- internals -----------------------------------------------------------

    def _matches(self, matcher: Matcher, labels: LabelSet) -> bool:
        if isinstance(matcher, Selector):
            return matcher.matches(labels)
        return peers_match(matcher, labels, self._nodes)

    def _watchers(self, labels: LabelSet) -> set[Matcher]:
        """The selectors that could select an identity with `labels` (a superset)."""
        if labels.source != SOURCE_K8S:
            return set(self._watch_non_pod)
        found = set(self._watch_all_pods)
        for item in labels.items:
            bucket = self._watch_by_label.get(item)
            if bucket:
                found |= bucket
        return found

    def _candidates(self, matcher: Matcher) -> set[int]:
        """The existing identities `matcher` could select (a superset), from the label index."""
        found: set[int] = set()
        identities = self._identities
        selectors = (matcher,) if isinstance(matcher, Selector) else matcher.selectors
        for selector in selectors:
            if SOURCE_K8S in selector.sources:
                narrowed = identities.candidates_any(selector.index_alternatives())
                found |= identities.pod_ids if narrowed is None else narrowed
            if selector.sources - {SOURCE_K8S}:
                found.update(identities.non_pod_ids())
        if isinstance(matcher, Peers) and (
            matcher.cidrs or matcher.entities or matcher.nodes or matcher.fqdns
        ):
            found.update(identities.non_pod_ids())
            if "cluster" in matcher.entities or any(c.pods for c in matcher.cidrs):
                found |= identities.pod_ids
        return found

    def _count_keys(self, matcher: Matcher, step: int) -> None:
        selectors = (matcher,) if isinstance(matcher, Selector) else matcher.selectors
        for selector in selectors:
            for key in (k for r in selector.requirements for k in r.read_keys()):
                before = self._key_refs[key]
                self._key_refs[key] = before + step
                if self._key_refs[key] <= 0:
                    del self._key_refs[key]
                if (before == 0) != (before + step == 0):
                    self.key_generation += 1


def _selector_plan(selector: Selector) -> WatchPlan:
    """How to watch one selector for new identities.

    A new pod identity can only match if it carries one of the index pairs, so the
    selector is watched under those pairs (one for `k=v`, one per value of `In`); a
    namespace pair is preferred, being the most selective.
    """
    pods = SOURCE_K8S in selector.sources
    non_pod = bool(selector.sources - {SOURCE_K8S})
    if not pods:
        return (), False, non_pod
    alternatives = selector.index_alternatives()
    if not alternatives:
        return (), True, non_pod
    namespace_pairs = [a for a in alternatives if a and a[0][0] == _NAMESPACE_LABEL]
    return min(namespace_pairs or alternatives, key=len), False, non_pod


def _watch_plans(matcher: Matcher) -> list[WatchPlan]:
    if isinstance(matcher, Selector):
        return [_selector_plan(matcher)]
    plans = [_selector_plan(s) for s in matcher.selectors]
    if matcher.cidrs or matcher.entities or matcher.nodes or matcher.fqdns:
        all_pods = "cluster" in matcher.entities or any(c.pods for c in matcher.cidrs)
        plans.append(((), all_pods, True))
    return plans
