"""The one adapter between the policy engine's entries and the datapath's.

The engine (``septum.operator.engine.entries``) hands out resolved verdicts with its own
lookup precedence: (1) exact peer + exact protocol, (2) any peer + exact protocol, (3) exact
peer + any protocol, (4) any peer + any protocol, where a protocol the direction lists is
decided by steps 1-2 alone.  The datapath, given a ``resolved`` policy, answers from the
peer's bucket (its one entry covering the protocol and port, else its any-protocol entry)
and asks the any-peer bucket only when the peer's bucket is silent.

The two agree except where a peer's any-protocol entry would answer for a listed protocol
the peer has no entry for: the engine goes on to step 2 there.  So the adapter copies the
any-peer entries of every listed protocol into the gaps of each peer that has an
any-protocol entry; the peer's bucket then answers for every listed protocol exactly as
step 2 would.  Peers without an any-protocol entry need no copies: their bucket is silent
wherever they have no entry, and the any-peer bucket decides steps 2 and 4 itself.

ICMP and ICMPv6: the engine writes the message type as the port, in segments over
0..65535.  A single type becomes ``icmp_type`` (type 0 is echo reply, not "any type"), a
segment covering 0..255 becomes "every type", other segments become a ``port_range`` of
types, and a segment beyond 255 (no ICMP type lies there) is left out.

This is the only module that imports both ``septum.operator.engine`` and
``septum.dataplane``; it is pure (no maps, no I/O).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Protocol

from septum.dataplane import policy as datapath
from septum.dataplane.abi import PolicyAction, TrafficDirection
from septum.operator.engine.entries import DirectionPolicy, PolicyEntry, Verdict
from septum.operator.engine.ports import (
    PORT_MAX,
    PORT_MIN,
    PROTO_ANY,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_UDP,
)
from septum.operator.engine.rules import Direction, L7Kind

ICMP_TYPE_MAX: Final = 255
_ICMP: Final = (PROTO_ICMP, PROTO_ICMPV6)
_DIRECTIONS: Final = {
    Direction.INGRESS: TrafficDirection.INGRESS,
    Direction.EGRESS: TrafficDirection.EGRESS,
}
_ACTIONS: Final = {Verdict.ALLOW: PolicyAction.ALLOW, Verdict.DENY: PolicyAction.DENY}


class EnginePolicy(Protocol):
    """An endpoint's policy as the engine hands it out: IdentityPolicy, Engine's
    EndpointPolicy."""

    @property
    def ingress(self) -> DirectionPolicy: ...

    @property
    def egress(self) -> DirectionPolicy: ...


class AdapterError(ValueError):
    """The engine's entries break the contract documented in its entries module; the message
    names the direction and the entry."""


def endpoint_policy(
    policy: EnginePolicy,
    l7_proxy_port: int = 0,
    l7_ingress_port: int | None = None,
    l7_dns_port: int | None = None,
) -> datapath.EndpointPolicy:
    """The datapath policy (resolved mode) that decides as the engine's policy does.

    l7_proxy_port: where allowed L7 traffic is redirected; 0 while there is no proxy yet
    (then L7 entries are plain allows).  l7_ingress_port: the ingress entries' port when the
    node runs a proxy per direction (septum.agent.l7.service: each proxy then knows whose
    rules it enforces); None: l7_proxy_port for both.  l7_dns_port: the DNS proxy's port, for
    entries whose L7 rules are all rules.dns (so DNS over TCP reaches the DNS proxy, not the
    HTTP one) and UDP entries with any rules.dns (the HTTP proxy has no UDP listener); None:
    the entry's direction port.
    """
    ingress_port = l7_proxy_port if l7_ingress_port is None else l7_ingress_port
    entries = [
        *direction_entries(policy.ingress, ingress_port, l7_dns_port),
        *direction_entries(policy.egress, l7_proxy_port, l7_dns_port),
    ]
    return datapath.EndpointPolicy(
        enforce_ingress=policy.ingress.enforced,
        enforce_egress=policy.egress.enforced,
        entries=tuple(entries),
        resolved=True,
    )


def direction_entries(
    policy: DirectionPolicy, l7_proxy_port: int = 0, l7_dns_port: int | None = None
) -> list[datapath.PolicyEntry]:
    """The datapath entries of one direction: the engine's, translated, plus each peer's copies
    of the any-peer entries it must answer for (see the module docstring)."""
    if not policy.enforced:
        return []
    by_peer: dict[int, list[PolicyEntry]] = {}
    for entry in policy.entries:
        by_peer.setdefault(entry.peer_identity, []).append(entry)
    wildcard = by_peer.get(0, [])
    _check_complete(wildcard, policy.protocols)
    translated: list[datapath.PolicyEntry] = []
    for peer, entries in by_peer.items():
        for entry in entries:
            translated.extend(translate_entry(entry, l7_proxy_port, l7_dns_port))
        if peer and any(e.protocol == PROTO_ANY for e in entries):
            for copy in peer_fill(peer, entries, wildcard, policy.protocols):
                translated.extend(translate_entry(copy, l7_proxy_port, l7_dns_port))
    return translated


def peer_fill(
    peer: int,
    peer_entries: Sequence[PolicyEntry],
    wildcard: Sequence[PolicyEntry],
    protocols: Iterable[int],
) -> list[PolicyEntry]:
    """The any-peer entries of the listed protocols, cut to the ports `peer` has no entry for
    and given to `peer`: what engine step 2 decides for it."""
    copies: list[PolicyEntry] = []
    for protocol in protocols:
        own = sorted((e.port_lo, e.port_hi) for e in peer_entries if e.protocol == protocol)
        for gap_lo, gap_hi in _gaps(own):
            for entry in wildcard:
                if entry.protocol != protocol:
                    continue
                lo, hi = max(gap_lo, entry.port_lo), min(gap_hi, entry.port_hi)
                if lo <= hi:
                    copies.append(entry._replace(peer_identity=peer, port_lo=lo, port_hi=hi))
    return copies


def _gaps(covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The port ranges of 0..65535 that none of the sorted, disjoint `covered` ranges hold."""
    gaps: list[tuple[int, int]] = []
    next_port = PORT_MIN
    for lo, hi in covered:
        if lo > next_port:
            gaps.append((next_port, lo - 1))
        next_port = max(next_port, hi + 1)
    if next_port <= PORT_MAX:
        gaps.append((next_port, PORT_MAX))
    return gaps


def _check_complete(wildcard: Sequence[PolicyEntry], protocols: Iterable[int]) -> None:
    """The engine's any-peer entries cover every listed protocol and have one any-protocol
    entry: without that, the engine's lookup finds nothing where the datapath would."""
    heads = [e for e in wildcard if e.protocol == PROTO_ANY]
    if len(heads) != 1:
        raise AdapterError(f"peer 0: {len(heads)} any-protocol entries, expected 1")
    for protocol in protocols:
        ranges = sorted((e.port_lo, e.port_hi) for e in wildcard if e.protocol == protocol)
        if _gaps(ranges):
            raise AdapterError(f"peer 0: protocol {protocol} is listed but not covered")


def translate_entry(
    entry: PolicyEntry, l7_proxy_port: int = 0, l7_dns_port: int | None = None
) -> list[datapath.PolicyEntry]:
    """One engine entry as datapath entries: none for ICMP types beyond 255, else one."""
    if entry.protocol == PROTO_ANY and (entry.port_lo, entry.port_hi) != (PORT_MIN, PORT_MAX):
        raise AdapterError(
            f"{entry.direction.value} peer {entry.peer_identity}: an any-protocol entry "
            f"has ports {entry.port_lo}-{entry.port_hi}"
        )
    ports = _ports(entry)
    if ports is None:
        return []
    icmp_type, port_range = ports
    allow = entry.verdict is Verdict.ALLOW
    translated = datapath.PolicyEntry(
        direction=_DIRECTIONS[entry.direction],
        peer_identity=entry.peer_identity,
        protocol=entry.protocol,
        action=_ACTIONS[entry.verdict],
        audit=entry.audit and not allow,
        l7_proxy_port=_proxy_port(entry, l7_proxy_port, l7_dns_port) if allow else 0,
        rule_id=entry.rule_id,
        icmp_type=icmp_type,
        port_range=port_range,
    )
    return [translated]


def _proxy_port(entry: PolicyEntry, l7_proxy_port: int, l7_dns_port: int | None) -> int:
    """Where an allowed entry's connections go: nowhere without L7 rules; the DNS proxy when
    every L7 rule there is rules.dns, or on UDP when any is (the HTTP proxy listens on TCP
    only: UDP sent there found no socket and was dropped); else the HTTP proxy's port
    (Cilium gives one port one L7 parser; where both kinds meet on TCP, the HTTP proxy, as
    before kinds were carried)."""
    if not entry.l7:
        return 0
    dns = entry.l7 == L7Kind.DNS or (entry.protocol == PROTO_UDP and entry.l7 & L7Kind.DNS)
    if dns and l7_dns_port is not None and l7_proxy_port:
        return l7_dns_port
    return l7_proxy_port


def _ports(entry: PolicyEntry) -> tuple[int | None, tuple[int, int] | None] | None:
    """(icmp_type, port_range) for the datapath entry, (None, None) meaning every port or
    type; None when the entry names no port or type a packet can have."""
    lo, hi = entry.port_lo, entry.port_hi
    if entry.protocol in _ICMP:
        if lo > ICMP_TYPE_MAX:
            return None
        hi = min(hi, ICMP_TYPE_MAX)
        if (lo, hi) == (0, ICMP_TYPE_MAX):
            return None, None
        if lo == hi:
            return lo, None
        return None, (lo, hi)
    if entry.protocol == PROTO_ANY or (lo, hi) == (PORT_MIN, PORT_MAX):
        return None, None
    return None, (lo, hi)


def policy_to_write(
    written: datapath.EndpointPolicy | None, desired: datapath.EndpointPolicy
) -> datapath.EndpointPolicy | None:
    """What to hand NodeDatapath.replace_policy so the endpoint holds `desired`, given what
    it holds (`written`; None: nothing yet): None when that already is `desired`.

    replace_policy writes a whole generation of map entries and switches to it, so a diff
    decides whether to write at all; which map keys change is the datapath's business.
    """
    if written is not None and datapath.diff_policy(written, desired).empty:
        return None
    return desired


__all__ = [
    "ICMP_TYPE_MAX",
    "AdapterError",
    "EnginePolicy",
    "direction_entries",
    "endpoint_policy",
    "peer_fill",
    "policy_to_write",
    "translate_entry",
]
