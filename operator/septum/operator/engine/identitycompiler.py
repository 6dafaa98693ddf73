"""Compiling pod identities: each identity's rules, in tier order, to its entries.

Entries are computed per identity (every pod of an identity shares them) and memoised on
their resolved inputs. After a change the flush asks for one of three updates per
identity, cheapest first: a clone (a new twin peer: copy the twin's entries), a peer
patch (only peer sets changed: patch the entries of those peers), or a full compile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass

from septum.operator.engine.cluster import PodKey
from septum.operator.engine.compile import MemoisedCompiler, ResolvedRule, patch_direction
from septum.operator.engine.entries import (
    UNENFORCED_POLICY,
    DirectionPolicy,
    IdentityPolicy,
    PolicyEntry,
)
from septum.operator.engine.registry import RuleRegistry
from septum.operator.engine.resolution import RuleResolver
from septum.operator.engine.rules import Action, Direction, Policy, PolicyKey, PolicyPart, Tier
from septum.operator.engine.selectorcache import Matcher, SelectorCache

# What a peer patch reports: (removed, added) entry slices, or None after a full recompile.
DeltaItem = tuple[tuple[PolicyEntry, ...], tuple[PolicyEntry, ...]]
Delta = list[DeltaItem | None]
# The twin recorded for an identity that is gone: a clone drops its entries instead.
DROP = -1
CloneMemo = dict[tuple[int, tuple[tuple[int, int], ...]], "Cloned"]


class IdentityCompiler:
    def __init__(
        self,
        registry: RuleRegistry,
        selectors: SelectorCache,
        resolver: RuleResolver,
        ordered: Callable[[], list[Policy]],
        identity_pods: Mapping[int, Set[PodKey]],
    ) -> None:
        self._registry = registry
        self._selectors = selectors
        self._resolver = resolver
        self._ordered = ordered  # the policies in evaluation order
        self._identity_pods = identity_pods  # the engine's live identity -> pods map
        self._memo = MemoisedCompiler(registry)
        self.compiled: dict[int, IdentityPolicy] = {}
        self._parts_cache: dict[int, list[tuple[Policy, PolicyPart]]] = {}
        # Last resolved rule list per (identity, direction), with the matcher behind each rule.
        self._last_rules: dict[
            tuple[int, Direction],
            tuple[tuple[ResolvedRule, ...], tuple[Matcher | None, ...], int | None],
        ] = {}
        # Where the peer patch under way reports its (removed, added) slices.
        self.delta: Delta | None = None

    # ---- bookkeeping -------------------------------------------------------

    def forget_parts(self, number: int | None = None) -> None:
        """Drop the cached (policy, part) list of `number`, or of every identity."""
        if number is None:
            self._parts_cache.clear()
        else:
            self._parts_cache.pop(number, None)

    def drop(self, number: int) -> None:
        """Forget a vanished identity's entries."""
        self.compiled.pop(number, None)
        self._forget_rules(number)

    def can_clone(self, number: int) -> bool:
        """Whether `number`'s entries can take clones (it has compiled, refreshable rules)."""
        return (
            number in self.compiled
            and (number, Direction.INGRESS) in self._last_rules
            and (number, Direction.EGRESS) in self._last_rules
        )

    def compile_rules(
        self, direction: Direction, rules: tuple[ResolvedRule, ...], default_deny_id: int | None
    ) -> DirectionPolicy:
        """Resolved rules to entries, memoised (for host endpoints)."""
        return self._memo.compile(direction, rules, default_deny_id)

    @contextmanager
    def from_scratch(self) -> Iterator[None]:
        """Compile without the memo inside the block (reference results for tests)."""
        with self._memo.bypassed():
            yield

    def _forget_rules(self, number: int) -> None:
        self._last_rules.pop((number, Direction.INGRESS), None)
        self._last_rules.pop((number, Direction.EGRESS), None)

    # ---- compiling -----------------------------------------------------------

    def parts_index(self) -> dict[int, list[tuple[Policy, PolicyPart]]]:
        index: dict[int, list[tuple[Policy, PolicyPart]]] = {}
        for policy in self._ordered():
            for part in policy.parts:
                if part.subject is None:
                    continue
                for number in self._selectors.selections(part.subject):
                    index.setdefault(number, []).append((policy, part))
        return index

    def parts_of(self, number: int) -> list[tuple[Policy, PolicyPart]]:
        cached = self._parts_cache.get(number)
        if cached is None:
            cached = [
                (policy, part)
                for policy in self._ordered()
                for part in policy.parts
                if part.subject is not None and number in self._selectors.selections(part.subject)
            ]
            self._parts_cache[number] = cached
        return cached

    def compile_identity(
        self,
        number: int,
        parts: list[tuple[Policy, PolicyPart]] | None,
        old: IdentityPolicy | None = None,
        changed_peers: set[int] | None = None,
    ) -> IdentityPolicy:
        if changed_peers is not None and old is not None:
            # Only peer sets changed: refresh the cached rule lists instead of re-resolving.
            ingress = self._refreshed_rules(number, Direction.INGRESS)
            egress = self._refreshed_rules(number, Direction.EGRESS)
            if ingress is not None and egress is not None:
                return IdentityPolicy(
                    self._finish(Direction.INGRESS, *ingress, old.ingress, changed_peers, True),
                    self._finish(Direction.EGRESS, *egress, old.egress, changed_peers, True),
                )
        if parts is None:
            parts = self.parts_of(number)
        if not parts:
            self._forget_rules(number)
            return UNENFORCED_POLICY
        patch_from = old if changed_peers is not None else None
        return IdentityPolicy(
            self._compile_direction(
                number,
                parts,
                Direction.INGRESS,
                patch_from.ingress if patch_from else None,
                changed_peers,
            ),
            self._compile_direction(
                number,
                parts,
                Direction.EGRESS,
                patch_from.egress if patch_from else None,
                changed_peers,
            ),
        )

    def _refreshed_rules(
        self, number: int, direction: Direction
    ) -> tuple[tuple[ResolvedRule, ...], int | None] | None:
        cached = self._last_rules.get((number, direction))
        if cached is None:
            return None
        rules, matchers, deny_id = cached
        fresh: list[ResolvedRule] = []
        for rule, matcher in zip(rules, matchers, strict=True):
            if matcher is None:
                fresh.append(rule)
                continue
            current = self._selectors.get(matcher)
            if current is None:
                return None
            fresh.append(rule if current is rule.peers else rule._replace(peers=current))
        result = tuple(fresh)
        self._last_rules[(number, direction)] = (result, matchers, deny_id)
        return result, deny_id

    def _compile_direction(
        self,
        number: int,
        parts: list[tuple[Policy, PolicyPart]],
        direction: Direction,
        old: DirectionPolicy | None = None,
        changed_peers: set[int] | None = None,
    ) -> DirectionPolicy:
        sections: dict[str, list[tuple[ResolvedRule, Matcher | None]]] = {
            "admin": [],
            "deny": [],
            "allow": [],
            "baseline": [],
        }
        isolated_by: list[PolicyKey] = []
        isolation_audited = True  # the default deny only reports if every isolator audits
        refreshable = True
        for policy, part in parts:
            if direction in part.isolates and policy.tier is Tier.NORMAL:
                isolated_by.append(policy.key)
                isolation_audited = isolation_audited and policy.audit
            for rule in part.rules:
                if rule.direction is not direction:
                    continue
                if policy.tier is Tier.ADMIN:
                    section = "admin"
                elif policy.tier is Tier.BASELINE:
                    section = "baseline"
                else:
                    section = "deny" if rule.action is Action.DENY else "allow"
                matcher = None if rule.peers.any_peer else rule.peers
                current = None if matcher is None else self._selectors.selections(matcher)
                for resolved in self._resolver.for_subject(policy, rule, number):
                    if resolved.peers is not current:
                        refreshable = False  # a per-peer named-port split: not a plain matcher set
                    sections[section].append((resolved, matcher))
        ordered = sections["admin"] + sections["deny"] + sections["allow"] + sections["baseline"]
        rules = tuple(item[0] for item in ordered)
        deny_id = (
            self._registry.default_deny(
                direction, tuple(sorted(set(isolated_by))), isolation_audited
            )
            if isolated_by
            else None
        )
        if refreshable:
            self._last_rules[(number, direction)] = (
                rules,
                tuple(item[1] for item in ordered),
                deny_id,
            )
        else:
            self._last_rules.pop((number, direction), None)
        return self._finish(direction, rules, deny_id, old, changed_peers)

    def _finish(
        self,
        direction: Direction,
        rules: tuple[ResolvedRule, ...],
        deny_id: int | None,
        old: DirectionPolicy | None,
        changed_peers: set[int] | None,
        same_ports: bool = False,
    ) -> DirectionPolicy:
        if old is not None and changed_peers is not None:
            # A peer patch is cheaper than hashing the rule list for the memo.
            none_id = self._registry.no_policy(direction)
            return patch_direction(
                direction,
                rules,
                deny_id,
                none_id,
                old,
                changed_peers,
                same_ports,
                self.delta,
                self._registry.audited,
            )
        return self._memo.compile(direction, rules, deny_id)

    def adopt(self, number: int, twin: int) -> IdentityPolicy:
        """A new identity's own policy: its twin's, which every selector treats alike.

        The twin's policy was updated in this flush, so it already holds entries
        for the new identity as a peer; only the bookkeeping is copied.
        """
        rules = [self._last_rules.get((twin, d)) for d in (Direction.INGRESS, Direction.EGRESS)]
        if twin not in self._identity_pods:
            return self.compile_identity(number, None)
        if twin not in self.compiled or None in rules:
            # Twins are selected by the same subjects: reuse the twin's (cached) part list
            # instead of scanning every policy again.
            return self.compile_identity(number, list(self.parts_of(twin)))
        for direction, cached in zip((Direction.INGRESS, Direction.EGRESS), rules, strict=True):
            assert cached is not None
            self._last_rules[(number, direction)] = cached
            for matcher in cached[1]:
                if matcher is not None:
                    self._selectors.add_user(matcher, number)
        return self.compiled[twin]

    def clone(
        self,
        number: int,
        pairs: set[tuple[int, int]],
        delta: Delta,
        memo: CloneMemo,
    ) -> IdentityPolicy:
        """Add entries for new identities by copying their twins' entries (same decisions).

        Subjects selected by the same rules share one DirectionPolicy object, so
        the copy is made once per distinct (policy, pairs) in a flush (`memo`)
        and every subject sharing the input shares the result and its delta.
        """
        old = self.compiled[number]
        ordered = tuple(sorted(pairs))
        result = []
        for policy in (old.ingress, old.egress):
            key = (id(policy), ordered)
            cloned = memo.get(key)
            if cloned is None:
                cloned = memo[key] = clone_direction(policy, ordered)
            delta.extend(cloned.delta)
            result.append(cloned.after)
        if result[0] is old.ingress and result[1] is old.egress:
            return old
        return IdentityPolicy(result[0], result[1])


@dataclass(frozen=True, slots=True)
class Cloned:
    """One direction's twin copy: `before` is held so its id() stays unique in the memo."""

    before: DirectionPolicy
    after: DirectionPolicy
    delta: tuple[DeltaItem, ...]


def clone_direction(policy: DirectionPolicy, pairs: tuple[tuple[int, int], ...]) -> Cloned:
    after, delta = policy.with_twins(pairs)
    return Cloned(policy, after, delta)
