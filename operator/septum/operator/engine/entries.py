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

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from septum.operator.engine.ports import PROTO_ANY
from septum.operator.engine.rules import Direction


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
    l7: bool  # allowed traffic must be redirected to the L7 proxy
    audit: bool  # the endpoint is in audit mode: log a deny, forward anyway
    rule_id: int
    peer_text: str = ""  # the selector / CIDR / entity text the peer came from (for explain)


def entry_order(entry: PolicyEntry) -> tuple[int, int, int]:
    return entry.peer_identity, entry.protocol, entry.port_lo


@dataclass(frozen=True, slots=True)
class DirectionPolicy:
    """Entries of one endpoint and direction, sorted by (peer, protocol, port)."""

    enforced: bool
    entries: tuple[PolicyEntry, ...]
    protocols: tuple[int, ...] = ()  # the protocols every peer key lists explicitly
    # The peer-0 decision segments, kept so a peer-only patch need not recompute them.
    wildcard: tuple[Any, ...] = field(default=(), compare=False, repr=False)
    _by_peer: dict[int, list[PolicyEntry]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
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
