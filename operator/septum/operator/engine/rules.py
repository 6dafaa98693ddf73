"""The engine's one internal policy model: every kind parses into these frozen types.

A `Policy` is a list of `PolicyPart`s (Cilium's `specs:` list form has several);
each part selects its subjects, may isolate them per direction (default deny),
and holds ordered `Rule`s. Tiers and orders make evaluation order explicit.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from septum.operator.engine.ports import PortSpec
from septum.operator.engine.selectors import Selector

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Direction(enum.Enum):
    INGRESS = "ingress"
    EGRESS = "egress"

    # Members are singletons: identity hashing is exact and much faster than
    # Enum's name hashing, which dominates when entries are put in sets.
    __hash__ = object.__hash__


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    PASS = "pass"

    __hash__ = object.__hash__


class Tier(enum.IntEnum):
    """Evaluation order of tiers: a lower value is evaluated first."""

    ADMIN = 0
    NORMAL = 1
    BASELINE = 2


class Kind(enum.Enum):
    NETWORK_POLICY = "NetworkPolicy"
    SEPTUM_POLICY = "SeptumNetworkPolicy"
    SEPTUM_CLUSTERWIDE = "SeptumClusterwideNetworkPolicy"
    CLUSTER_NETWORK_POLICY = "ClusterNetworkPolicy"
    ADMIN_NETWORK_POLICY = "AdminNetworkPolicy"
    BASELINE_ADMIN_NETWORK_POLICY = "BaselineAdminNetworkPolicy"


NAMESPACED_KINDS = frozenset({Kind.NETWORK_POLICY, Kind.SEPTUM_POLICY})


@dataclass(frozen=True, slots=True, order=True)
class PolicyKey:
    kind: str
    namespace: str  # "" for cluster-scoped kinds
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@dataclass(frozen=True, slots=True, order=True)
class RuleRef:
    """What a numeric rule id maps back to: the policy and the rule's field path."""

    policy: PolicyKey
    path: str
    name: str = ""  # the admin-tier rule's `name`, if any

    def __str__(self) -> str:
        label = f" ({self.name!r})" if self.name else ""
        return f"{self.policy} {self.path}{label}"


@dataclass(frozen=True, slots=True)
class CidrPeer:
    """A prefix minus its excepts; matches CIDR/world identities and, when `pods` (a
    NetworkPolicy ipBlock or an admin-tier `networks` CIDR: upstream's rule), the pod
    identities whose addresses it holds and the node identities (host, remote-node) whose
    addresses it holds: all of them, or any of them when `any_node_address` (a Deny)."""

    cidr: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()
    pods: bool = False
    any_node_address: bool = False

    def __str__(self) -> str:
        if not self.excepts:
            return str(self.cidr)
        return f"{self.cidr} except {','.join(str(e) for e in self.excepts)}"


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """Cilium's HeaderMatch: a header that must have a value; with a mismatch action (LOG,
    ADD, DELETE, REPLACE) a mismatch is acted on by the proxy instead of denying."""

    name: str
    value: str = ""
    mismatch: str = ""  # "" (must match), "LOG", "ADD", "DELETE" or "REPLACE"


MISMATCH_ACTIONS = ("LOG", "ADD", "DELETE", "REPLACE")


@dataclass(frozen=True, slots=True)
class HttpRule:
    method: str = ""
    path: str = ""
    host: str = ""
    headers: tuple[str, ...] = ()
    header_matches: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class DnsRule:
    match_name: str = ""
    match_pattern: str = ""


class L7Kind(enum.IntFlag):
    """Which proxy an entry's connections go to: its rules' kinds, OR-ed where rules of
    both kinds meet on one port (truthy whenever there is any L7 rule; NONE is falsy)."""

    NONE = 0
    HTTP = 1
    DNS = 2


@dataclass(frozen=True, slots=True)
class L7Rules:
    """L7 rules carried to the proxy (enforced by a later stage, not by this engine)."""

    http: tuple[HttpRule, ...] = ()
    dns: tuple[DnsRule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.http or self.dns)

    @property
    def kind(self) -> L7Kind:
        return (L7Kind.HTTP if self.http else L7Kind.NONE) | (
            L7Kind.DNS if self.dns else L7Kind.NONE
        )


@dataclass(frozen=True, slots=True)
class PortRule:
    """A set of ports with the L7 rules that apply on them."""

    ports: tuple[PortSpec, ...]
    l7: L7Rules = L7Rules()


@dataclass(frozen=True, slots=True)
class Peers:
    """Who a rule matches on the other side. `any_peer` matches every identity."""

    any_peer: bool = False
    selectors: tuple[Selector, ...] = ()
    cidrs: tuple[CidrPeer, ...] = ()
    entities: tuple[str, ...] = ()
    nodes: tuple[Selector, ...] = ()
    fqdns: tuple[str, ...] = ()  # carried; resolved to CIDRs by a later stage
    _hash: list[int] = field(default_factory=list, compare=False, repr=False)

    def __hash__(self) -> int:
        # Peers key the selector cache: hash once, not on every lookup.
        if not self._hash:
            self._hash.append(
                hash(
                    (
                        self.any_peer,
                        self.selectors,
                        self.cidrs,
                        self.entities,
                        self.nodes,
                        self.fqdns,
                    )
                )
            )
        return self._hash[0]

    def describe(self) -> str:
        if self.any_peer:
            return "any peer"
        parts = [f"endpoints {s}" for s in self.selectors]
        parts += [f"cidr {c}" for c in self.cidrs]
        parts += [f"entity {e}" for e in self.entities]
        parts += [f"nodes {n}" for n in self.nodes]
        parts += [f"fqdn {f}" for f in self.fqdns]
        return " or ".join(parts) if parts else "no peer"


@dataclass(frozen=True, slots=True)
class Rule:
    ref: RuleRef
    direction: Direction
    action: Action
    peers: Peers
    # None: every protocol and port. Otherwise the union of the PortRules.
    ports: tuple[PortRule, ...] | None = None

    @property
    def l7(self) -> L7Rules:
        http = tuple(h for p in self.ports or () for h in p.l7.http)
        dns = tuple(d for p in self.ports or () for d in p.l7.dns)
        return L7Rules(http, dns)


@dataclass(frozen=True, slots=True)
class PolicyPart:
    """Subjects + per-direction isolation + ordered rules (one Cilium spec, or a whole policy)."""

    subject: Selector | None  # endpoints selected; None when the part selects nodes
    node_subject: Selector | None
    isolates: frozenset[Direction]
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Policy:
    key: PolicyKey
    tier: Tier
    priority: int  # within an admin tier; 0 for the normal tier
    parts: tuple[PolicyPart, ...]
    description: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default=())
    audit: bool = False  # audit mode (annotation): its denies only report, traffic passes

    @property
    def order(self) -> tuple[int, int, str, str]:
        """Tier, then priority, then a stable tie-break by kind and name."""
        return (
            int(self.tier),
            self.priority,
            self.key.kind,
            f"{self.key.namespace}/{self.key.name}",
        )


def cidr_prefixes(policy: Policy) -> list[IPNetwork]:
    """Every prefix a policy's CIDR peers name, excepts included: each needs an identity."""
    found: list[IPNetwork] = []
    for part in policy.parts:
        for rule in part.rules:
            for cidr in rule.peers.cidrs:
                found.append(cidr.cidr)
                found.extend(cidr.excepts)
    return found


def own_label_keys(policy: Policy) -> list[str]:
    """The pod label keys `policy`'s upstream-API pod selectors read (`Requirement.own`)."""
    found: list[str] = []
    for part in policy.parts:
        selectors = [part.subject] if part.subject is not None else []
        for rule in part.rules:
            selectors.extend(rule.peers.selectors)
        for selector in selectors:
            found.extend(r.key for r in selector.requirements if r.own)
    return found


def fqdn_selectors(policy: Policy) -> list[str]:
    """Every toFQDNs matchName / matchPattern text of a policy."""
    return [fqdn for part in policy.parts for rule in part.rules for fqdn in rule.peers.fqdns]


def pod_cidr_prefixes(policy: Policy) -> list[IPNetwork]:
    """The prefixes of the CIDR peers that select pods by address (NetworkPolicy ipBlocks)."""
    found: list[IPNetwork] = []
    for part in policy.parts:
        for rule in part.rules:
            for cidr in rule.peers.cidrs:
                if cidr.pods:
                    found.append(cidr.cidr)
                    found.extend(cidr.excepts)
    return found
