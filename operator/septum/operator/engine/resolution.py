"""Rule resolution: a parsed rule, for one subject, as the compiler's ResolvedRules.

Resolving fills in what a rule leaves to the cluster: its peers become the identity set the
selector cache holds for them, and its named ports become port numbers. A named port means
the port of the endpoint receiving the connection: on ingress the subject's own container
port, on egress each peer's, so an egress rule with named ports splits into one resolved
rule per group of peers that resolve to the same ports. Pods and host endpoints resolve
through the same code; a host endpoint simply has no named container ports.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from septum.operator.engine.compile import ResolvedRule
from septum.operator.engine.ports import NamedPort, PortRange
from septum.operator.engine.registry import RuleRegistry
from septum.operator.engine.rules import Direction, L7Kind, Policy, Rule, Tier
from septum.operator.engine.selectorcache import SelectorCache

# A pod identity's named container ports: name -> {(protocol, port)}.
NamedPortMap = dict[str, frozenset[tuple[int, int]]]
NO_NAMED_PORTS: NamedPortMap = {}


def resolve_named_ports(
    named: Sequence[NamedPort], table: Mapping[str, frozenset[tuple[int, int]]]
) -> tuple[PortRange, ...]:
    """The sorted single-port ranges `named` resolves to in one endpoint's port `table`."""
    if not named:
        return ()
    found: set[PortRange] = set()
    for port in named:
        for protocol, number in table.get(port.name, ()):
            if port.protocol is None or port.protocol == protocol:
                found.add(PortRange(protocol, number, number))
    return tuple(sorted(found))


def resolve_rule(
    rule: Rule,
    rule_id: int,
    text: str,
    tier: Tier,
    peers: frozenset[int] | None,
    subject_ports: NamedPortMap,
    peer_ports: Mapping[int, NamedPortMap],
    all_peers: Iterable[int],
) -> list[ResolvedRule]:
    """`rule` (registered as `rule_id`, its peers described by `text`) resolved for a
    subject whose named ports are `subject_ports`.

    `peers` is the rule's selection (None: any peer); `peer_ports` holds every pod
    identity's named ports and `all_peers` the identities "any peer" stands for when
    an egress named port must be resolved per peer.
    """
    if rule.ports is None:
        return [ResolvedRule(rule_id, tier, rule.action, peers, None, L7Kind.NONE, text)]
    resolved: list[ResolvedRule] = []
    for port_rule in rule.ports:
        l7 = port_rule.l7.kind
        numeric = tuple(p for p in port_rule.ports if isinstance(p, PortRange))
        named = [p for p in port_rule.ports if isinstance(p, NamedPort)]
        if rule.direction is Direction.INGRESS:
            numeric += resolve_named_ports(named, subject_ports)
            resolved.append(ResolvedRule(rule_id, tier, rule.action, peers, numeric, l7, text))
            continue
        resolved.append(ResolvedRule(rule_id, tier, rule.action, peers, numeric, l7, text))
        if named:
            by_ports: dict[tuple[PortRange, ...], set[int]] = {}
            for peer in sorted(peers if peers is not None else all_peers):
                ports = resolve_named_ports(named, peer_ports.get(peer, NO_NAMED_PORTS))
                if ports:
                    by_ports.setdefault(ports, set()).add(peer)
            for ports, group in sorted(by_ports.items()):
                resolved.append(
                    ResolvedRule(rule_id, tier, rule.action, frozenset(group), ports, l7, text)
                )
    return resolved


def has_named_ports(rule: Rule) -> bool:
    return rule.ports is not None and any(
        isinstance(p, NamedPort) for port_rule in rule.ports for p in port_rule.ports
    )


class RuleResolver:
    """Resolves the rules of registered policies for pod subjects and host endpoints.

    Holds each registered rule's id, and caches resolutions that do not depend on the
    subject (rules without named ports) while the rule's selection is the same object.
    """

    def __init__(
        self,
        registry: RuleRegistry,
        selectors: SelectorCache,
        named_ports: Mapping[int, NamedPortMap],
        pod_identities: Mapping[int, object],
    ) -> None:
        self._registry = registry
        self._selectors = selectors
        self._named_ports = named_ports  # the engine's live table, per pod identity
        self._pod_identities = pod_identities  # the engine's live identity -> pods map
        # id(rule) -> (rule id, the peers described): describing peers is not free. Keyed by
        # identity (hashing a rule is not free either); `_rules` keeps each rule alive, so an id
        # is never reused while it is a key, and lets a deep copy re-key (`__deepcopy__`).
        self._rule_ids: dict[int, tuple[int, str]] = {}
        self._rules: dict[int, Rule] = {}
        self._resolved: dict[int, tuple[frozenset[int] | None, list[ResolvedRule]]] = {}
        # Subjects with an egress rule naming ports: their peers' named ports matter to them.
        self.egress_named_users: set[int] = set()

    def register(self, policy: Policy) -> None:
        for part in policy.parts:
            for rule in part.rules:
                text = rule.peers.describe()
                rule_id = self._registry.rule(
                    rule.ref, rule.direction, policy.tier, rule.action, text, policy.audit
                )
                self._rule_ids[id(rule)] = (rule_id, text)
                self._rules[id(rule)] = rule

    def unregister(self, policy: Policy) -> None:
        for part in policy.parts:
            for rule in part.rules:
                self._rule_ids.pop(id(rule), None)
                self._resolved.pop(id(rule), None)
                self._rules.pop(id(rule), None)

    def __deepcopy__(self, memo: dict[int, Any]) -> RuleResolver:
        """A copy keyed by the copied rules (what-if deep-copies the whole engine: the policies'
        rules become new objects, found through `memo` as the same copies the policies hold)."""
        clone = RuleResolver.__new__(RuleResolver)
        memo[id(self)] = clone
        for name, value in vars(self).items():
            if name not in ("_rule_ids", "_rules", "_resolved"):
                setattr(clone, name, copy.deepcopy(value, memo))
        new_ids = {old: id(copy.deepcopy(rule, memo)) for old, rule in self._rules.items()}
        clone._rules = {
            new_ids[old]: copy.deepcopy(rule, memo) for old, rule in self._rules.items()
        }
        clone._rule_ids = {new_ids[old]: value for old, value in self._rule_ids.items()}
        clone._resolved = {
            new_ids[old]: copy.deepcopy(value, memo)
            for old, value in self._resolved.items()
            if old in new_ids
        }
        return clone

    def forget_subject(self, subject: int) -> None:
        self.egress_named_users.discard(subject)

    def for_subject(self, policy: Policy, rule: Rule, subject: int) -> list[ResolvedRule]:
        """`rule` resolved for pod identity `subject`, recorded as a user of its selection."""
        peers = self._selection(rule)
        if peers is not None:
            self._selectors.add_user(rule.peers, subject)
        cached = self._resolved.get(id(rule))
        # Without named ports a rule resolves the same for every subject: reuse it
        # while its peer set is the very same object.
        if cached is not None and cached[0] is peers:
            return cached[1]
        named = has_named_ports(rule)
        if named and rule.direction is Direction.EGRESS:
            self.egress_named_users.add(subject)
        result = resolve_rule(
            rule,
            *self._rule_ids[id(rule)],
            policy.tier,
            peers,
            self._named_ports.get(subject, NO_NAMED_PORTS),
            self._named_ports,
            self._pod_identities,
        )
        if not named:
            self._resolved[id(rule)] = (peers, result)
        return result

    def for_host(self, policy: Policy, rule: Rule) -> list[ResolvedRule]:
        """`rule` resolved for a host endpoint (hosts have no named container ports)."""
        return resolve_rule(
            rule,
            *self._rule_ids[id(rule)],
            policy.tier,
            self._selection(rule),
            NO_NAMED_PORTS,
            self._named_ports,
            self._pod_identities,
        )

    def _selection(self, rule: Rule) -> frozenset[int] | None:
        return None if rule.peers.any_peer else self._selectors.selections(rule.peers)
