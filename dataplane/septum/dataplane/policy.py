"""The datapath's own policy-entry type and its encoding into policy map entries.

An endpoint's policy is a set of :class:`PolicyEntry` per direction plus whether a policy
selects the endpoint in that direction at all (an unselected direction allows everything).
The pure policy engine (``septum.operator.engine``) has its own types; an adapter maps
them onto these, so the engine never imports the datapath and vice versa.

Encoding (see ``struct septum_policy_key`` in abi.h): entries become keys in per-(direction,
peer identity) buckets: the bucket head (any protocol), protocol-only keys, exact-port keys
and, in an LPM trie, port-range prefixes.  The datapath stops at the most specific key it
finds, so deny-beats-allow is resolved here:

1. every any-peer deny is copied into each peer bucket of its direction (a peer bucket
   that answers must not hide an any-peer deny);
2. inside a bucket, an allow key that a deny key covers (same or wider protocol/ports)
   becomes that deny.  A deny narrower than an allow is found first by the datapath.

Resolved mode (``EndpointPolicy.resolved``) is for entries whose verdicts were decided
upstream, as the policy engine's are: each entry is written as given, with neither rewrite,
and two entries of one (direction, peer, protocol) that overlap are refused, so at most one
key of a bucket matches a (protocol, port).  The datapath's lookup then answers, for a
packet: the peer bucket's one entry covering (protocol, port), else that bucket's
any-protocol entry, and only when the peer bucket has neither, the any-peer bucket the same
way.  Whatever precedence the producer wants beyond that (for instance, that a peer's
any-protocol entry never answers for some protocol) it writes as entries.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from septum.dataplane import abi
from septum.dataplane.abi import MatchType, PolicyAction, TrafficDirection
from septum.dataplane.errors import PolicyEntryError

IPPROTO_ICMP: Final = 1
IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58
IPPROTO_SCTP: Final = 132
# A port without a protocol means these three (Cilium's "ANY" protocol with a port).
PORT_PROTOCOLS: Final = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP)
_ICMP: Final = (IPPROTO_ICMP, IPPROTO_ICMPV6)
_U32_MAX: Final = 0xFFFFFFFF


@dataclass(frozen=True, order=True)
class PolicyEntry:
    """One policy entry of an endpoint.

    peer_identity 0 = any peer; protocol 0 = any protocol; port 0 = any port, otherwise the
    first port, end_port the last port of a range (0: only `port`).  port_range, given
    instead of port/end_port, is an inclusive (first, last) range: the one way to name port
    0 alone.  ICMP/ICMPv6 have types instead: icmp_type (0..255, 0 = echo reply) names one,
    or a nonzero `port` does (the engine's "type as port"), or port_range names a range of
    types; with none of them, every type.  A deny beats every allow it overlaps (unless the
    policy is ``resolved``).  audit: this deny only reports (verdict AUDIT).  l7_proxy_port:
    the L7 proxy's port: allowed connections are redirected to it (bpf/lib/proxy.h).
    """

    direction: TrafficDirection
    peer_identity: int = abi.IDENTITY_ANY
    protocol: int = 0
    port: int = 0
    end_port: int = 0
    action: PolicyAction = PolicyAction.ALLOW
    audit: bool = False
    l7_proxy_port: int = 0
    rule_id: int = 0
    icmp_type: int | None = None
    port_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class EndpointPolicy:
    """Everything that decides an endpoint's new connections; replaced as one unit.

    resolved: the entries' verdicts were decided upstream (the policy engine's are): they
    are written as given, without deny-beats-allow, and must not overlap within one
    (direction, peer, protocol); see the module docstring for the lookup this gives.
    """

    enforce_ingress: bool = False
    enforce_egress: bool = False
    entries: tuple[PolicyEntry, ...] = ()
    resolved: bool = False

    @classmethod
    def selecting(cls, entries: Iterable[PolicyEntry]) -> EndpointPolicy:
        """Enforce exactly the directions that have entries."""
        items = tuple(entries)
        return cls(
            enforce_ingress=any(e.direction == TrafficDirection.INGRESS for e in items),
            enforce_egress=any(e.direction == TrafficDirection.EGRESS for e in items),
            entries=items,
        )


@dataclass(frozen=True)
class PolicyDiff:
    added: frozenset[PolicyEntry]
    removed: frozenset[PolicyEntry]
    enforcement_changed: bool
    # the same entries encode differently in resolved mode: a switch must be written too
    resolved_changed: bool = False

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.enforcement_changed or self.resolved_changed)


def diff_policy(current: EndpointPolicy, desired: EndpointPolicy) -> PolicyDiff:
    old, new = set(current.entries), set(desired.entries)
    return PolicyDiff(
        added=frozenset(new - old),
        removed=frozenset(old - new),
        enforcement_changed=(current.enforce_ingress, current.enforce_egress)
        != (desired.enforce_ingress, desired.enforce_egress),
        resolved_changed=current.resolved != desired.resolved,
    )


def validate(entries: Sequence[PolicyEntry]) -> None:
    """Raise PolicyEntryError naming ``entries[i].field`` for the first invalid entry."""
    for index, entry in enumerate(entries):
        where = f"entries[{index}]"
        for name in ("peer_identity", "protocol", "port", "end_port", "l7_proxy_port", "rule_id"):
            value = getattr(entry, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PolicyEntryError(f"{where}.{name}: {value!r} is not an integer")
        if entry.direction not in (TrafficDirection.INGRESS, TrafficDirection.EGRESS):
            raise PolicyEntryError(f"{where}.direction: {entry.direction!r} is not INGRESS/EGRESS")
        if not 0 <= entry.peer_identity <= _U32_MAX:
            raise PolicyEntryError(f"{where}.peer_identity: {entry.peer_identity} out of range")
        if not 0 <= entry.protocol <= 255:
            raise PolicyEntryError(f"{where}.protocol: {entry.protocol} out of range 0..255")
        limit = 255 if entry.protocol in _ICMP else 65535
        if not 0 <= entry.port <= limit:
            raise PolicyEntryError(f"{where}.port: {entry.port} out of range 0..{limit}")
        if entry.end_port and not entry.port <= entry.end_port <= limit:
            raise PolicyEntryError(
                f"{where}.end_port: {entry.end_port} must be within {entry.port}..{limit}"
            )
        if entry.end_port and entry.protocol in _ICMP:
            raise PolicyEntryError(f"{where}.end_port: ICMP types take no ranges")
        if entry.icmp_type is not None:
            if isinstance(entry.icmp_type, bool) or not isinstance(entry.icmp_type, int):
                raise PolicyEntryError(f"{where}.icmp_type: {entry.icmp_type!r} is not an integer")
            if entry.protocol not in _ICMP:
                raise PolicyEntryError(f"{where}.icmp_type: only ICMP and ICMPv6 have types")
            if not 0 <= entry.icmp_type <= 255:
                raise PolicyEntryError(f"{where}.icmp_type: {entry.icmp_type} out of range 0..255")
            if entry.port:
                raise PolicyEntryError(f"{where}.port: give the ICMP type once (icmp_type)")
        if entry.port_range is not None:
            _validate_port_range(entry, where, limit)
        if entry.action not in (PolicyAction.ALLOW, PolicyAction.DENY):
            raise PolicyEntryError(f"{where}.action: {entry.action!r} is not ALLOW/DENY")
        if not 0 <= entry.l7_proxy_port <= 65535:
            raise PolicyEntryError(f"{where}.l7_proxy_port: {entry.l7_proxy_port} out of range")
        if entry.l7_proxy_port and entry.action != PolicyAction.ALLOW:
            raise PolicyEntryError(f"{where}.l7_proxy_port: only allow entries redirect to L7")
        if not 0 <= entry.rule_id <= _U32_MAX:
            raise PolicyEntryError(f"{where}.rule_id: {entry.rule_id} out of range")


def _validate_port_range(entry: PolicyEntry, where: str, limit: int) -> None:
    port_range = entry.port_range
    if (
        not isinstance(port_range, tuple)
        or len(port_range) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in port_range)
    ):
        raise PolicyEntryError(f"{where}.port_range: {port_range!r} is not a (first, last) pair")
    first, last = port_range
    if not 0 <= first <= last <= limit:
        raise PolicyEntryError(
            f"{where}.port_range: {first}..{last} is not a range within 0..{limit}"
        )
    if not entry.protocol:
        raise PolicyEntryError(f"{where}.port_range: give a protocol")
    if entry.port or entry.end_port or entry.icmp_type is not None:
        raise PolicyEntryError(f"{where}.port_range: give the ports once (port_range alone)")


# A key inside one bucket: (protocol, port value, port prefix length 0..16).
# protocol 0 = the bucket head; plen 0 = any port; plen 16 = exact port; else a range.
_Slot = tuple[int, int, int]
_Bucket = tuple[int, int]  # (direction, peer identity)


@dataclass
class _Value:
    action: PolicyAction
    rule_id: int
    audit: bool
    l7_proxy_port: int
    match_type: MatchType

    def merged(self, other: _Value) -> _Value:
        if self.action != other.action:
            return self if self.action == PolicyAction.DENY else other
        if self.action == PolicyAction.DENY:
            # a real deny beats an audit-only deny
            audit = self.audit and other.audit
            winner = self if (self.audit, self.rule_id) <= (other.audit, other.rule_id) else other
            return _Value(winner.action, winner.rule_id, audit, 0, winner.match_type)
        winner = self if self.rule_id <= other.rule_id else other
        l7 = self.l7_proxy_port or other.l7_proxy_port
        return _Value(winner.action, winner.rule_id, False, l7, winner.match_type)


def _port_blocks(first: int, last: int) -> list[tuple[int, int]]:
    """Split [first, last] into aligned prefix blocks (value, prefix length 0..16)."""
    blocks: list[tuple[int, int]] = []
    while first <= last:
        size = first & -first if first else 1 << 16
        while first + size - 1 > last:
            size >>= 1
        blocks.append((first, 16 - size.bit_length() + 1))
        first += size
    return blocks


def _match_type(peer_identity: int, protocol: int) -> MatchType:
    if peer_identity:
        return MatchType.L3_L4 if protocol else MatchType.L3_ONLY
    return MatchType.L4_ONLY if protocol else MatchType.ALL


def _slots(entry: PolicyEntry) -> list[_Slot]:
    if not entry.protocol:
        if not entry.port:
            return [(0, 0, 0)]
        protocols: Sequence[int] = PORT_PROTOCOLS
    else:
        protocols = (entry.protocol,)
    if entry.protocol in _ICMP:
        if entry.port_range is not None:
            first, last = entry.port_range
            blocks = _port_blocks(abi.POLICY_ICMP_TYPE | first, abi.POLICY_ICMP_TYPE | last)
            return [(entry.protocol, value, plen) for value, plen in blocks]
        icmp_type = entry.icmp_type if entry.icmp_type is not None else entry.port or None
        if icmp_type is None:
            return [(entry.protocol, 0, 0)]
        return [(entry.protocol, abi.POLICY_ICMP_TYPE | icmp_type, 16)]
    if entry.port_range is not None:
        first, last = entry.port_range
    elif not entry.port and not entry.end_port:
        return [(p, 0, 0) for p in protocols]
    else:
        first, last = entry.port, entry.end_port or entry.port
    blocks = _port_blocks(first, last)
    return [(p, value, plen) for p in protocols for value, plen in blocks]


def _slot_span(slot: _Slot) -> tuple[int, int]:
    """The first and last port value a slot's key matches."""
    _protocol, value, plen = slot
    return value, value + (1 << (16 - plen)) - 1


def _refuse_overlaps(entries: Sequence[PolicyEntry]) -> None:
    """Resolved mode: raise PolicyEntryError naming the first entry that overlaps an earlier
    one of the same (direction, peer, protocol); protocol 0 without ports is the head."""
    spans: dict[tuple[int, int, int], list[tuple[int, int, int]]] = defaultdict(list)
    for index, entry in enumerate(entries):
        for slot in _slots(entry):
            first, last = _slot_span(slot)
            spans[(int(entry.direction), entry.peer_identity, slot[0])].append((first, last, index))
    clashes: list[tuple[int, int, int]] = []  # (later index, earlier index, protocol)
    for (_direction, _peer, protocol), items in spans.items():
        items.sort()
        reach_last, reach_index = -1, -1
        for first, last, index in items:
            if first <= reach_last:
                clashes.append((max(index, reach_index), min(index, reach_index), protocol))
            if last > reach_last:
                reach_last, reach_index = last, index
    if clashes:
        later, earlier, protocol = min(clashes)
        entry = entries[later]
        direction = TrafficDirection(entry.direction).name.lower()
        raise PolicyEntryError(
            f"entries[{later}]: overlaps entries[{earlier}] ({direction}, peer "
            f"{entry.peer_identity}, protocol {protocol}): a resolved policy has one entry "
            "per (direction, peer, protocol, port)"
        )


def _covers(wide: _Slot, narrow: _Slot) -> bool:
    protocol, value, plen = wide
    if protocol == 0:
        return True
    if protocol != narrow[0] or plen > narrow[2] or narrow[0] == 0:
        return False
    shift = 16 - plen
    return (narrow[1] >> shift) == (value >> shift) if plen else True


@dataclass
class EncodedPolicy:
    """Map entries for one endpoint, before the endpoint id and generation are applied."""

    hash_entries: dict[tuple[int, int, int, int], _Value] = field(default_factory=dict)
    range_entries: dict[tuple[int, int, int, int, int], _Value] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hash_entries) + len(self.range_entries)

    def policy_items(
        self, endpoint_id: int, generation: int
    ) -> tuple[list[abi.PolicyKey], list[abi.PolicyValue]]:
        keys, values = [], []
        head_flags = self._head_flags()
        for (direction, peer, protocol, port), value in self.hash_entries.items():
            keys.append(
                abi.PolicyKey(
                    endpoint_id=endpoint_id,
                    generation=generation,
                    direction=direction,
                    peer_identity=peer,
                    protocol=protocol,
                    dport_be=socket.htons(port),
                )
            )
            is_head = not protocol and not port
            flags = head_flags.get((direction, peer), 0) if is_head else 0
            values.append(_value_struct(value, flags))
        return keys, values

    def range_items(
        self, endpoint_id: int, generation: int
    ) -> tuple[list[abi.PolicyRangeKey], list[abi.PolicyValue]]:
        keys, values = [], []
        for (direction, peer, protocol, port, plen), value in self.range_entries.items():
            keys.append(
                abi.PolicyRangeKey(
                    prefixlen=abi.POLICY_RANGE_PREFIX_FIXED + plen,
                    endpoint_id=endpoint_id,
                    generation=generation,
                    direction=direction,
                    peer_identity=peer,
                    protocol=protocol,
                    dport_be=socket.htons(port),
                )
            )
            values.append(_value_struct(value, 0))
        return keys, values

    def _head_flags(self) -> dict[tuple[int, int], int]:
        """Per bucket: which lookups beyond the head can match (SEPTUM_POLICY_F_HAS_*)."""
        flags: dict[tuple[int, int], int] = defaultdict(int)
        for direction, peer, protocol, port in self.hash_entries:
            if protocol:
                flags[(direction, peer)] |= (
                    abi.POLICY_F_HAS_EXACT if port else abi.POLICY_F_HAS_PROTO
                )
        for direction, peer, _protocol, _port, _plen in self.range_entries:
            flags[(direction, peer)] |= abi.POLICY_F_HAS_RANGE
        return flags


def _value_struct(value: _Value, head_flags: int) -> abi.PolicyValue:
    flags = head_flags | (abi.POLICY_F_AUDIT if value.audit else 0)
    return abi.PolicyValue(
        rule_id=value.rule_id,
        l7_proxy_port=value.l7_proxy_port,
        action=value.action,
        flags=flags,
        match_type=value.match_type,
    )


def encode(policy: EndpointPolicy) -> EncodedPolicy:
    """Encode an endpoint's entries into map entries with deny-beats-allow resolved (or, for
    a ``resolved`` policy, as given)."""
    validate(policy.entries)
    if policy.resolved:
        _refuse_overlaps(policy.entries)
    buckets: dict[_Bucket, dict[_Slot, _Value]] = defaultdict(dict)
    for entry in policy.entries:
        value = _Value(
            entry.action,
            entry.rule_id,
            entry.audit and entry.action == PolicyAction.DENY,
            entry.l7_proxy_port,
            _match_type(entry.peer_identity, entry.protocol),
        )
        bucket = buckets[(int(entry.direction), entry.peer_identity)]
        for slot in _slots(entry):
            bucket[slot] = bucket[slot].merged(value) if slot in bucket else value
    if not policy.resolved:
        _deny_beats_allow(buckets)
    return _map_entries(buckets)


def _deny_beats_allow(buckets: dict[_Bucket, dict[_Slot, _Value]]) -> None:
    # 1. any-peer denies into every peer bucket of their direction
    for (direction, peer), bucket in list(buckets.items()):
        if peer == abi.IDENTITY_ANY:
            continue
        any_bucket = buckets.get((direction, abi.IDENTITY_ANY), {})
        for slot, value in any_bucket.items():
            if value.action == PolicyAction.DENY:
                bucket[slot] = bucket[slot].merged(value) if slot in bucket else value

    # 2. allows covered by a deny of the same bucket become that deny
    for bucket in buckets.values():
        denies = [(s, v) for s, v in bucket.items() if v.action == PolicyAction.DENY]
        if not denies:
            continue
        for slot, value in list(bucket.items()):
            if value.action != PolicyAction.ALLOW:
                continue
            covering = [(s, v) for s, v in denies if _covers(s, slot)]
            if covering:
                # the most specific covering deny names the rule
                _, deny = max(covering, key=lambda item: (item[0][0] != 0, item[0][2]))
                bucket[slot] = deny


def _map_entries(buckets: dict[_Bucket, dict[_Slot, _Value]]) -> EncodedPolicy:
    encoded = EncodedPolicy()
    for (direction, peer), bucket in buckets.items():
        head = bucket.get((0, 0, 0))
        encoded.hash_entries[(direction, peer, 0, 0)] = head or _Value(
            PolicyAction.NONE, 0, False, 0, MatchType.NONE
        )
        for (protocol, port, plen), value in bucket.items():
            if protocol == 0:
                continue
            if plen == 0:
                encoded.hash_entries[(direction, peer, protocol, 0)] = value
            elif plen == 16 and port:  # port 0 alone: the hash key (protocol, 0) is "any port"
                encoded.hash_entries[(direction, peer, protocol, port)] = value
            else:
                encoded.range_entries[(direction, peer, protocol, port, plen)] = value
    return encoded
