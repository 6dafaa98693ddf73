"""The engine's output: datapath entries per endpoint and direction, and how they are looked up.

This is the contract with the datapath (which translates it into its own map
format; the engine never imports the datapath):

- Per endpoint and direction, entries are keyed by (peer identity, protocol,
  destination-port range). Peer identity 0 means "any peer"; protocol 0 means
  "any protocol not listed for this peer"; ICMP/ICMPv6 use the message type as
  the port.
- For one peer key the entries never overlap and together cover every
  protocol and port: the same protocols are listed for every peer key of the
  direction, plus a protocol-0 entry for the rest.
- Lookup: if any entry exists for the exact peer identity, those decide;
  otherwise the peer-0 entries do. Within a peer key, an entry for the exact
  protocol covering the port decides, else the protocol-0 entry. Cilium's
  precedence (exact L3+L4, then L4-only wildcard, then L3-only, then all
  wildcard) gives the same answer on these entries.
- A direction with no entries is not enforced: everything is allowed.
- `rule_id` maps back to the rule (or default) that decided, via RuleRegistry.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

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
        candidates = self._by_peer.get(peer_identity) or self._by_peer.get(0, [])
        fallback = None
        for entry in candidates:
            if entry.port_lo <= port <= entry.port_hi:
                if entry.protocol == protocol:
                    return entry
                if entry.protocol == PROTO_ANY:
                    fallback = entry
        return fallback


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
