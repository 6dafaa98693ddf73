"""The engine's output: datapath entries per endpoint and direction, and how they are looked up.

This is the contract with the datapath (which translates it into its own map
format; the engine never imports the datapath):

- Per endpoint and direction, entries are keyed by (peer identity, protocol,
  destination-port range). Peer identity 0 means "any peer"; protocol 0 means
  "any protocol the direction does not list" (`DirectionPolicy.protocols`);
  ICMP/ICMPv6 use the message type as the port.
- Entries of one (peer, protocol) never overlap. The peer-0 entries are
  complete: every listed protocol over 0-65535, plus one protocol-0 entry.
  A specific peer only gets entries where its verdict differs from peer 0's.
- Lookup, first match wins (Cilium's precedence): (1) exact peer, exact
  protocol, range covers the port; (2) peer 0, exact protocol; (3) exact peer,
  protocol 0; (4) peer 0, protocol 0.
- A direction with no entries is not enforced: everything is allowed.
- `rule_id` maps back to the rule (or default) that decided, via RuleRegistry.
"""

from __future__ import annotations

import bisect
import enum
import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from septum.operator.engine.cluster import EndpointKey
from septum.operator.engine.ports import PROTO_ANY
from septum.operator.engine.rules import Direction, L7Kind


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"

    __hash__ = object.__hash__  # see rules.Direction


class PolicyEntry(NamedTuple):
    direction: Direction
    peer_identity: int
    protocol: int
    port_lo: int
    port_hi: int
    verdict: Verdict
    l7: L7Kind  # allowed traffic goes to the L7 proxy of this kind (NONE: no redirect)
    audit: bool  # the endpoint is in audit mode: log a deny, forward anyway
    rule_id: int
    peer_text: str = ""  # the selector / CIDR / entity text the peer came from (for explain)


def entry_order(entry: PolicyEntry) -> tuple[int, int, int]:
    return entry.peer_identity, entry.protocol, entry.port_lo


# PolicyEntry field 1 (peer_identity), fetched in C: a Python key function
# costs most of a bisect on the hot incremental path.
_peer_of = operator.itemgetter(1)
OVERLAY_LIMIT = 64  # overlay items (added + dropped peers) before with_twins folds them in
Delta = tuple[tuple[PolicyEntry, ...], tuple[PolicyEntry, ...]]  # (removed, added)


def peer_slice(entries: tuple[PolicyEntry, ...], peer: int) -> tuple[int, int]:
    """The [lo, hi) index range of `peer`'s entries in a sorted entry tuple."""
    lo = bisect.bisect_left(entries, peer, key=_peer_of)
    hi = bisect.bisect_right(entries, peer, lo=lo, key=_peer_of)
    return lo, hi


def _overlay_entries(
    base: tuple[PolicyEntry, ...],
    added: dict[int, int],
    dropped: frozenset[int] | set[int],
    peer: int,
) -> tuple[PolicyEntry, ...]:
    """One peer's entries in base + overlay: an added peer copies its source's base entries."""
    source = added.get(peer)
    if source is None:
        if peer in dropped:
            return ()
        lo, hi = peer_slice(base, peer)
        return base[lo:hi]
    lo, hi = peer_slice(base, source)
    # tuple.__new__ skips NamedTuple._replace's Python-level field mapping.
    return tuple(tuple.__new__(PolicyEntry, (e[0], peer, *e[2:])) for e in base[lo:hi])


class DirectionPolicy:
    """Entries of one endpoint and direction, sorted by (peer, protocol, port).

    Immutable by contract. A policy made by `with_twins` is lazy: it keeps its
    base entry tuple plus an overlay (new peer -> base peer whose entries it
    copies, and base peers dropped), and builds `entries` only when read. A new
    twin identity thus costs O(its entries) per distinct policy instead of a
    copy of the whole tuple; the engine's diffs come from the reported deltas,
    so incremental updates never need the full tuple.
    """

    __slots__ = (
        "enforced",
        "protocols",
        "wildcard",
        "_entries",
        "_base",
        "_added",
        "_dropped",
        "_by_peer",
    )

    def __init__(
        self,
        enforced: bool,
        entries: tuple[PolicyEntry, ...],
        protocols: tuple[int, ...] = (),
        wildcard: tuple[Any, ...] = (),
    ) -> None:
        self.enforced = enforced
        self.protocols = protocols  # the protocols every peer key lists explicitly
        # The peer-0 decision segments, kept so a peer-only patch need not recompute them.
        self.wildcard = wildcard
        self._entries: tuple[PolicyEntry, ...] | None = entries
        self._base: tuple[PolicyEntry, ...] = entries
        self._added: dict[int, int] = {}
        self._dropped: frozenset[int] = frozenset()
        self._by_peer: dict[int, list[PolicyEntry]] = {}

    @property
    def entries(self) -> tuple[PolicyEntry, ...]:
        if self._entries is None:
            self._entries = self._materialise()
            # Drop the overlay's hold on the older base tuple (memory, not meaning).
            self._base, self._added, self._dropped = self._entries, {}, frozenset()
        return self._entries

    def _materialise(self) -> tuple[PolicyEntry, ...]:
        base = self._base
        hidden = sorted(self._dropped | self._added.keys())
        pieces: list[tuple[PolicyEntry, ...]] = []
        start = 0
        for peer in hidden:
            lo, hi = peer_slice(base, peer)
            if lo < hi:
                pieces.append(base[start:lo])
                start = hi
        pieces.append(base[start:])
        for peer in sorted(self._added):
            pieces.append(self.peer_entries(peer))
        merged = list(itertools.chain.from_iterable(pieces))
        merged.sort()  # runs of sorted pieces: timsort merges them in linear time
        return tuple(merged)

    def peer_entries(self, peer: int) -> tuple[PolicyEntry, ...]:
        """The entries of one peer identity, without building the whole tuple."""
        if self._entries is not None:
            lo, hi = peer_slice(self._entries, peer)
            return self._entries[lo:hi]
        return _overlay_entries(self._base, self._added, self._dropped, peer)

    def with_twins(
        self, pairs: Iterable[tuple[int, int]]
    ) -> tuple[DirectionPolicy, tuple[Delta, ...]]:
        """Entries for new identities copied from their twins' (pairs of (new, twin)),
        or a vanished identity's entries dropped (twin < 0): the new policy and its delta.

        Twins decide alike under every rule, so the copies are exact. Only the
        overlay is copied, never the entry tuple.
        """
        base: tuple[PolicyEntry, ...]
        added: dict[int, int]
        dropped: set[int]
        if self._entries is None and len(self._added) + len(self._dropped) > OVERLAY_LIMIT:
            # Each derived policy copies the overlay: fold a long one into a fresh tuple
            # (O(entries) once per OVERLAY_LIMIT twins, instead of growing without bound).
            self.entries  # noqa: B018 - builds and caches the full tuple
        if self._entries is not None:
            base, added, dropped = self._entries, {}, set()
        else:
            base, added, dropped = self._base, dict(self._added), set(self._dropped)
        delta: list[Delta] = []
        for new, twin in pairs:
            if twin < 0:
                existing = _overlay_entries(base, added, dropped, new)
                if existing:
                    added.pop(new, None)
                    dropped.add(new)
                    delta.append((existing, ()))
                continue
            if twin in added:
                source = added[twin]
            elif twin in dropped:
                continue
            else:
                source = twin
            lo, hi = peer_slice(base, source)
            if lo == hi:
                continue  # the common case: the twin has no entries of its own here
            existing = _overlay_entries(base, added, dropped, new)
            added[new] = source
            copies = tuple(tuple.__new__(PolicyEntry, (e[0], new, *e[2:])) for e in base[lo:hi])
            delta.append((existing, copies))
        if not delta:
            return self, ()
        return DirectionPolicy._lazy(self, base, added, frozenset(dropped)), tuple(delta)

    @staticmethod
    def _lazy(
        like: DirectionPolicy,
        base: tuple[PolicyEntry, ...],
        added: dict[int, int],
        dropped: frozenset[int],
    ) -> DirectionPolicy:
        policy = DirectionPolicy(like.enforced, base, like.protocols, like.wildcard)
        policy._entries = None
        policy._added = added
        policy._dropped = dropped
        return policy

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DirectionPolicy):
            return NotImplemented
        return (self.enforced, self.entries, self.protocols) == (
            other.enforced,
            other.entries,
            other.protocols,
        )

    def __hash__(self) -> int:
        return hash((self.enforced, self.entries, self.protocols))

    def __repr__(self) -> str:
        return (
            f"DirectionPolicy(enforced={self.enforced!r}, entries={self.entries!r}, "
            f"protocols={self.protocols!r})"
        )

    def lookup(self, peer_identity: int, protocol: int, port: int) -> PolicyEntry | None:
        """Apply the datapath's lookup rule; None means "not enforced, allowed"."""
        if not self.enforced:
            return None
        if not self._by_peer:
            for entry in self.entries:
                self._by_peer.setdefault(entry.peer_identity, []).append(entry)
        specific = self._by_peer.get(peer_identity, []) if peer_identity else []
        wildcard = self._by_peer.get(0, [])
        steps = (
            (specific, protocol),
            (wildcard, protocol),
            (specific, PROTO_ANY),
            (wildcard, PROTO_ANY),
        )
        for candidates, wanted in steps:
            if wanted == PROTO_ANY and protocol in self.protocols:
                continue  # a listed protocol is always decided by steps 1-2
            for entry in candidates:
                if entry.protocol == wanted and entry.port_lo <= port <= entry.port_hi:
                    return entry
        return None


NOT_ENFORCED = DirectionPolicy(False, ())


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    ingress: DirectionPolicy
    egress: DirectionPolicy

    def direction(self, direction: Direction) -> DirectionPolicy:
        return self.ingress if direction is Direction.INGRESS else self.egress

    def entries(self) -> frozenset[PolicyEntry]:
        return frozenset(self.ingress.entries) | frozenset(self.egress.entries)


UNENFORCED_POLICY = IdentityPolicy(NOT_ENFORCED, NOT_ENFORCED)


@dataclass(frozen=True, slots=True)
class EntryDiff:
    """Entries to add and remove for one endpoint, minimal: no entry is in both."""

    added: frozenset[PolicyEntry]
    removed: frozenset[PolicyEntry]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)

    @staticmethod
    def between(old: Iterable[PolicyEntry], new: Iterable[PolicyEntry]) -> EntryDiff:
        old_set = frozenset(old)
        new_set = frozenset(new)
        return EntryDiff(new_set - old_set, old_set - new_set)


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    pod: EndpointKey  # a PodKey, or a HostKey for a node's host endpoint
    identity: int  # a host endpoint is the reserved host identity (1) on its own node
    audit: bool
    ingress: DirectionPolicy
    egress: DirectionPolicy

    def entries(self) -> frozenset[PolicyEntry]:
        return frozenset(self.ingress.entries) | frozenset(self.egress.entries)
