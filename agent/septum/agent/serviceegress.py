"""Egress to a Service frontend, decided as Kubernetes decides it: after translation.

The datapath decides a pod's egress before kube-proxy's DNAT, on the frontend address, which
the agent maps to a service identity S (`septum.agent.services`).  This module gives S the
entries that say what the pod may reach behind it: for each frontend (S, protocol, port), one
entry on exactly that port whose verdict is the AND of the engine's own egress verdicts for
every backend (its identity, the protocol, its target port) — so a connection through the
frontend is allowed only if it would be allowed to whichever backend kube-proxy picks.

- A backend that is the pod itself is skipped: kube-proxy hairpins it through the node, which
  the pod always reaches; the pod as its only backend is an allow.
- A frontend without backends gets no entry: the direction's own entries decide (as for
  `world`, which kube-proxy rejects anyway).
- The deciding entry names the rule: a deny takes the first denying backend's entry (one that
  really drops before an audited one), an allow the first backend's allowing entry (rule id,
  L7 marker, audit flag), so flows name the policy as if the pod had dialled the backend.

The added entries keep the engine's invariants (`septum.operator.engine.entries`): S appears in
no engine entry, its entries are single ports of distinct (protocol, port), it has no
any-protocol entry, so the datapath's bucket lookup and `DirectionPolicy.lookup` agree on it.

`PrefixIdentities` is the longest-prefix match over the node's desired ipcache that says who
a backend address is.  Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from septum.agent.services import Backend, Frontend
from septum.operator.engine.entries import DirectionPolicy, PolicyEntry, Verdict
from septum.operator.engine.rules import Direction, L7Kind
from septum.wellknown.reserved import ReservedIdentity

IdentityOf = Callable[[str], int]


class PrefixIdentities:
    """prefix → identity with a longest-prefix match: the ipcache as the datapath holds it."""

    def __init__(self) -> None:
        self.table: dict[str, int] = {}
        # (version, prefix length) → {network address as an int: identity}
        self._by_length: dict[tuple[int, int], dict[int, int]] = {}

    @staticmethod
    def _parts(prefix: str) -> tuple[int, int, int]:
        network = ipaddress.ip_network(prefix, strict=False)
        return network.version, network.prefixlen, int(network.network_address)

    def set(self, prefix: str, identity: int) -> None:
        version, length, address = self._parts(prefix)
        self.table[prefix] = identity
        self._by_length.setdefault((version, length), {})[address] = identity

    def delete(self, prefix: str) -> None:
        if self.table.pop(prefix, None) is None:
            return
        version, length, address = self._parts(prefix)
        level = self._by_length.get((version, length), {})
        level.pop(address, None)
        if not level:
            self._by_length.pop((version, length), None)

    def get(self, prefix: str) -> int | None:
        return self.table.get(prefix)

    def identity_of(self, ip: str) -> int:
        """The identity of the longest prefix holding `ip`; `world` when none does."""
        address = ipaddress.ip_address(ip)
        bits = address.max_prefixlen
        value = int(address)
        lengths = sorted((n for v, n in self._by_length if v == address.version), reverse=True)
        for length in lengths:
            masked = value >> (bits - length) << (bits - length) if length else 0
            found = self._by_length[(address.version, length)].get(masked)
            if found is not None:
                return found
        return int(ReservedIdentity.WORLD)

    def covers(self, prefix: str, ips: Iterable[str]) -> bool:
        """Whether `prefix` holds any of `ips` (a change there may change their identity)."""
        network = ipaddress.ip_network(prefix, strict=False)
        for ip in ips:
            address = ipaddress.ip_address(ip)
            if address.version == network.version and address in network:
                return True
        return False


@dataclass(frozen=True)
class ServiceFrontend:
    """A frontend as the derivation needs it: its identity and backends."""

    identity: int
    frontend: Frontend
    backends: tuple[Backend, ...]
    name: str = ""  # "namespace/name" for explain's peer text


def frontend_entry(
    egress: DirectionPolicy,
    service: ServiceFrontend,
    own_ips: frozenset[str],
    identity_of: IdentityOf,
) -> PolicyEntry | None:
    """The entry of one frontend for an endpoint (own addresses `own_ips`) under `egress`;
    None when the frontend has no backend."""
    if not service.backends:
        return None
    frontend = service.frontend
    allowing: PolicyEntry | None = None
    denying: PolicyEntry | None = None
    for backend in service.backends:
        if backend.ip in own_ips:
            continue
        decided = egress.lookup(identity_of(backend.ip), frontend.protocol, backend.port)
        if decided is None or decided.verdict is Verdict.ALLOW:
            if allowing is None and decided is not None:
                allowing = decided
            continue
        if denying is None or (denying.audit and not decided.audit):
            denying = decided
    chosen = denying or allowing
    verdict = Verdict.DENY if denying is not None else Verdict.ALLOW
    return PolicyEntry(
        Direction.EGRESS,
        service.identity,
        frontend.protocol,
        frontend.port,
        frontend.port,
        verdict,
        chosen.l7 if chosen is not None else L7Kind.NONE,
        chosen.audit if chosen is not None else False,
        chosen.rule_id if chosen is not None else 0,
        f"service:{service.name}" if service.name else "service",
    )


def with_service_entries(
    egress: DirectionPolicy,
    frontends: Iterable[ServiceFrontend],
    own_ips: Iterable[str],
    identity_of: IdentityOf,
) -> DirectionPolicy:
    """`egress` plus one entry per frontend with backends; unenforced egress stays as it is."""
    if not egress.enforced:
        return egress
    own = frozenset(own_ips)
    added = [
        entry
        for service in frontends
        if (entry := frontend_entry(egress, service, own, identity_of)) is not None
    ]
    if not added:
        return egress
    entries = tuple(sorted((*egress.entries, *added)))
    return DirectionPolicy(True, entries, egress.protocols, egress.wildcard)


def frontends_by_identity(
    table: Mapping[Frontend, tuple[Backend, ...]],
    identities: Mapping[str, int],
    names: Mapping[str, str] | None = None,
) -> list[ServiceFrontend]:
    """The service table joined with the frontend addresses' identities (addresses without
    one, e.g. shadowed by a pod or node address, are left out)."""
    names = names or {}
    found: list[ServiceFrontend] = []
    for frontend, backends in sorted(table.items()):
        identity = identities.get(frontend.ip)
        if identity is not None:
            found.append(ServiceFrontend(identity, frontend, backends, names.get(frontend.ip, "")))
    return found
