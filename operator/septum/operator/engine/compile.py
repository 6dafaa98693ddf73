"""Compile the ordered rules of one endpoint and direction into flat datapath entries.

The datapath has no tiers and no "first match": it looks up one entry. So the
compiler partitions the (peer identity x protocol x port) space by every
boundary the rules draw — peers grouped by which rules name them, ports cut at
every range edge — decides each cell with the full tier semantics (`decide`),
merges neighbours with the same decision, and emits a complete, non-overlapping
entry set (see `entries` for the lookup contract).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence, Set
from contextlib import contextmanager
from typing import NamedTuple

from septum.operator.engine.entries import DirectionPolicy, PolicyEntry, Verdict, peer_slice
from septum.operator.engine.ports import PORT_MAX, PORT_MIN, PROTO_ANY, PortRange
from septum.operator.engine.registry import RuleRegistry
from septum.operator.engine.rules import Action, Direction, L7Kind, Tier

# A protocol no rule names: cells of "every other protocol" are decided with it.
OTHER_PROTOCOL = -1


class ResolvedRule(NamedTuple):
    """A rule with its peers resolved to identity numbers and its named ports to numbers.

    A NamedTuple: rule tuples are memo keys, hashed on every compile.
    """

    rule_id: int
    tier: Tier
    action: Action
    peers: frozenset[int] | None  # None: every peer
    ports: tuple[PortRange, ...] | None  # None: every protocol and port
    l7: L7Kind  # the proxy kinds of the rule's L7 rules (NONE: a plain L3/L4 rule)
    peer_text: str = ""

    def matches_port(self, protocol: int, port: int) -> bool:
        if self.ports is None:
            return True
        return any(p.covers(protocol, port) for p in self.ports)


Decision = tuple[Verdict, int, L7Kind, str]  # verdict, rule id, L7 redirect kind, peer text


def decide(
    rules: Sequence[ResolvedRule],
    default_deny_id: int | None,
    no_policy_id: int,
    protocol: int,
    port: int,
) -> Decision:
    """The verdict for one cell; `rules` are the ones whose peers match, in evaluation order.

    Admin tier: first match decides, Pass skips to the normal tier. Normal tier:
    any deny wins, else any allow, else default deny if isolated, else the
    baseline tier (first match) and finally "allowed, no policy".
    """
    index = 0
    count = len(rules)
    while index < count and rules[index].tier is Tier.ADMIN:
        rule = rules[index]
        index += 1
        if rule.matches_port(protocol, port):
            if rule.action is Action.PASS:
                break
            verdict = Verdict.ALLOW if rule.action is Action.ALLOW else Verdict.DENY
            return verdict, rule.rule_id, _redirect(rule, verdict), rule.peer_text
    while index < count and rules[index].tier is Tier.ADMIN:
        index += 1
    allow: ResolvedRule | None = None
    l7 = L7Kind.NONE
    while index < count and rules[index].tier is Tier.NORMAL:
        rule = rules[index]
        index += 1
        if not rule.matches_port(protocol, port):
            continue
        if rule.action is Action.DENY:
            return Verdict.DENY, rule.rule_id, L7Kind.NONE, rule.peer_text
        if allow is None:
            allow = rule
        l7 |= rule.l7
    if allow is not None:
        # Deny rules sort before allow rules of the normal tier, so none is left to win.
        return Verdict.ALLOW, allow.rule_id, l7, allow.peer_text
    if default_deny_id is not None:
        return Verdict.DENY, default_deny_id, L7Kind.NONE, ""
    while index < count:
        rule = rules[index]
        index += 1
        if rule.matches_port(protocol, port):
            if rule.action is Action.PASS:
                break
            verdict = Verdict.ALLOW if rule.action is Action.ALLOW else Verdict.DENY
            return verdict, rule.rule_id, _redirect(rule, verdict), rule.peer_text
    return Verdict.ALLOW, no_policy_id, L7Kind.NONE, ""


def _redirect(rule: ResolvedRule, verdict: Verdict) -> L7Kind:
    return rule.l7 if verdict is Verdict.ALLOW else L7Kind.NONE


def _segments(
    rules: Sequence[ResolvedRule],
    protocols: Sequence[int],
    default_deny_id: int | None,
    no_policy_id: int,
) -> tuple[tuple[int, int, int, Decision], ...]:
    """(protocol, lo, hi, decision) segments covering every listed protocol, then protocol 0."""
    segments: list[tuple[int, int, int, Decision]] = []
    for protocol in protocols:
        cuts = {PORT_MIN, PORT_MAX + 1}
        for rule in rules:
            for port_range in rule.ports or ():
                if port_range.protocol == protocol:
                    cuts.add(port_range.lo)
                    cuts.add(port_range.hi + 1)
        edges = sorted(cuts)
        current: tuple[int, Decision] | None = None
        for lo in edges[:-1]:
            decision = decide(rules, default_deny_id, no_policy_id, protocol, lo)
            if current is not None and current[1] == decision:
                continue
            if current is not None:
                segments.append((protocol, current[0], lo - 1, current[1]))
            current = (lo, decision)
        assert current is not None
        segments.append((protocol, current[0], PORT_MAX, current[1]))
    other = decide(rules, default_deny_id, no_policy_id, OTHER_PROTOCOL, PORT_MIN)
    segments.append((PROTO_ANY, PORT_MIN, PORT_MAX, other))
    return tuple(segments)


Segment = tuple[int, int, int, Decision]


def _differing(segments: tuple[Segment, ...], wildcard: tuple[Segment, ...]) -> list[Segment]:
    """The parts of a peer's segments whose decision differs from the peer-0 (wildcard) one.

    Only these become peer-specific entries: the lookup falls back to peer 0
    for everything else (see `entries`), which keeps per-peer entries few.
    """
    by_protocol: dict[int, list[Segment]] = {}
    for item in wildcard:
        by_protocol.setdefault(item[0], []).append(item)
    found: list[Segment] = []
    for proto, lo, hi, decision in segments:
        for _, w_lo, w_hi, w_decision in by_protocol.get(proto, ()):
            if w_hi < lo or w_lo > hi or w_decision == decision:
                continue
            start, end = max(lo, w_lo), min(hi, w_hi)
            last = found[-1] if found else None
            if (
                last is not None
                and last[0] == proto
                and last[2] + 1 == start
                and last[3] == decision
            ):
                found[-1] = (proto, last[1], end, decision)
            else:
                found.append((proto, start, end, decision))
    return found


def _audit(verdict: Verdict, rule_id: int, audited: Set[int]) -> bool:
    """A deny decided by a rule (or default deny) in audit mode only reports."""
    return verdict is Verdict.DENY and rule_id in audited


def compile_direction(
    direction: Direction,
    rules: Sequence[ResolvedRule],
    default_deny_id: int | None,
    no_policy_id: int,
    audited: Set[int] = frozenset(),
) -> DirectionPolicy:
    """Entries for one endpoint and direction from its rules in evaluation order;
    `audited`: the rule ids whose denies only report (`RuleRegistry.audited`)."""
    if not rules and default_deny_id is None:
        return DirectionPolicy(False, ())
    protocols = rule_protocols(rules)
    # Group peer identities by the exact set of rules that name them: every
    # identity in a group has the same decision function.
    signature: dict[int, list[int]] = {}
    wildcard_rules: list[int] = []
    for position, rule in enumerate(rules):
        if rule.peers is None:
            wildcard_rules.append(position)
            continue
        for peer in rule.peers:
            found = signature.get(peer)
            if found is None:
                signature[peer] = [position]
            else:
                found.append(position)
    groups: dict[tuple[int, ...], list[int]] = {}
    for peer, positions in signature.items():
        groups.setdefault(tuple(positions), []).append(peer)
    wildcard_segments = _segments(
        [rules[i] for i in wildcard_rules], protocols, default_deny_id, no_policy_id
    )
    entries: list[PolicyEntry] = []
    for proto, lo, hi, (verdict, rule_id, l7, text) in wildcard_segments:
        audit = _audit(verdict, rule_id, audited)
        entries.append(PolicyEntry(direction, 0, proto, lo, hi, verdict, l7, audit, rule_id, text))
    for group_key, peers in groups.items():
        active = sorted((*group_key, *wildcard_rules))
        segments = _segments([rules[i] for i in active], protocols, default_deny_id, no_policy_id)
        differing = [
            (proto, lo, hi, verdict, l7, _audit(verdict, rule_id, audited), rule_id, text)
            for proto, lo, hi, (verdict, rule_id, l7, text) in _differing(
                segments, wildcard_segments
            )
        ]
        # Hundreds of thousands of entries: build them with tuple.__new__, which
        # skips the NamedTuple constructor's argument handling.
        make = tuple.__new__
        for peer in peers:
            for fields in differing:
                entries.append(make(PolicyEntry, (direction, peer, *fields)))
    # One direction per tuple, so tuples order by (peer, protocol, port) without a key.
    entries.sort()
    return DirectionPolicy(True, tuple(entries), protocols, wildcard_segments)


def rule_protocols(rules: Sequence[ResolvedRule]) -> tuple[int, ...]:
    return tuple(sorted({p.protocol for rule in rules for p in rule.ports or ()} - {PROTO_ANY}))


def patch_direction(
    direction: Direction,
    rules: Sequence[ResolvedRule],
    default_deny_id: int | None,
    no_policy_id: int,
    old: DirectionPolicy,
    changed_peers: set[int],
    same_ports: bool = False,
    delta: list[tuple[tuple[PolicyEntry, ...], tuple[PolicyEntry, ...]] | None] | None = None,
    audited: Set[int] = frozenset(),
) -> DirectionPolicy:
    """Recompute only the entries of `changed_peers` (identities that joined/left peer sets).

    Valid because a peer's decision depends only on the rules that name it and
    the wildcard rules; the other peers' entries cannot change. Falls back to a
    full compile when the protocol list itself changes.
    """
    protocols = old.protocols if same_ports else rule_protocols(rules)
    if not old.enforced or protocols != old.protocols or not old.wildcard:
        if delta is not None:
            delta.append(None)  # not a peer-only change: the caller diffs everything
        return compile_direction(direction, rules, default_deny_id, no_policy_id, audited)
    # Peer sets never change the wildcard rules, so the peer-0 segments carry over.
    wildcard = old.wildcard
    wildcard_count = sum(1 for rule in rules if rule.peers is None)
    pieces: list[tuple[PolicyEntry, ...]] = []
    start = 0
    old_entries = old.entries
    for peer in sorted(changed_peers):
        lo, hi = peer_slice(old_entries, peer)
        pieces.append(old_entries[start:lo])
        start = hi
        active = [rule for rule in rules if rule.peers is None or peer in rule.peers]
        fresh: tuple[PolicyEntry, ...] = ()
        if len(active) != wildcard_count:
            segments = _segments(active, protocols, default_deny_id, no_policy_id)
            fresh = tuple(
                PolicyEntry(
                    direction,
                    peer,
                    proto,
                    lo_port,
                    hi_port,
                    verdict,
                    l7,
                    _audit(verdict, rule_id, audited),
                    rule_id,
                    text,
                )
                for proto, lo_port, hi_port, (verdict, rule_id, l7, text) in _differing(
                    segments, wildcard
                )
            )
            pieces.append(fresh)
        if delta is not None and (fresh or hi > lo):
            delta.append((old_entries[lo:hi], fresh))
    pieces.append(old_entries[start:])
    entries = tuple(itertools.chain.from_iterable(pieces))
    return DirectionPolicy(True, entries, protocols, wildcard)


class MemoisedCompiler:
    """compile_direction memoised on its resolved inputs.

    Subjects selected by the same rules resolve to equal rule tuples, so they share one
    compiled DirectionPolicy (one object: later diffs compare with `is`).
    """

    # Bounds memory at large scale; a full clear is cheap next to the compiles it saves.
    LIMIT = 200_000

    def __init__(self, registry: RuleRegistry) -> None:
        self._registry = registry
        self._results: dict[
            tuple[Direction, tuple[ResolvedRule, ...], int | None], DirectionPolicy
        ] = {}

    def compile(
        self, direction: Direction, rules: tuple[ResolvedRule, ...], default_deny_id: int | None
    ) -> DirectionPolicy:
        key = (direction, rules, default_deny_id)
        cached = self._results.get(key)
        if cached is not None:
            return cached
        result = compile_direction(
            direction,
            rules,
            default_deny_id,
            self._registry.no_policy(direction),
            self._registry.audited,
        )
        if len(self._results) > self.LIMIT:
            self._results.clear()
        self._results[key] = result
        return result

    @contextmanager
    def bypassed(self) -> Iterator[None]:
        """Compile from scratch inside the block (for reference results), then restore."""
        saved = self._results
        self._results = {}
        try:
            yield
        finally:
            self._results = saved
