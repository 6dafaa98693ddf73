"""Host endpoints: one per node, selected only by clusterwide policies with a nodeSelector.

Nodes are few, so host endpoints skip the per-identity bookkeeping of pods: while any host
policy exists they are recompiled in full on every update (memoised like pods) and diffed
against the last result. Only SeptumClusterwideNetworkPolicy selects hosts, so every rule
is in the policy tier: denies first, then allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from septum.operator.engine.changes import ChangeSet
from septum.operator.engine.cluster import HostKey, Node
from septum.operator.engine.compile import ResolvedRule
from septum.operator.engine.entries import (
    UNENFORCED_POLICY,
    DirectionPolicy,
    EntryDiff,
    IdentityPolicy,
)
from septum.operator.engine.flush import policy_diff
from septum.operator.engine.identitycompiler import IdentityCompiler
from septum.operator.engine.labels import LabelSet
from septum.operator.engine.registry import RuleRegistry
from septum.operator.engine.resolution import RuleResolver
from septum.operator.engine.rules import Action, Direction, Policy, PolicyKey, PolicyPart, Tier


def node_labels(node: Node) -> LabelSet:
    return LabelSet.of("node", node.labels)


class HostEndpoints:
    def __init__(
        self,
        nodes: Mapping[str, Node],
        ordered: Callable[[], list[Policy]],
        registry: RuleRegistry,
        resolver: RuleResolver,
        compiler: IdentityCompiler,
    ) -> None:
        self._nodes = nodes  # the engine's live node table
        self._ordered = ordered  # the policies in evaluation order
        self._registry = registry
        self._resolver = resolver
        self._compiler = compiler
        self.compiled: dict[str, IdentityPolicy] = {}  # node name -> entries, if enforced
        self._policies: set[PolicyKey] = set()  # the policies with a nodeSelector

    def policy_added(self, policy: Policy) -> None:
        if any(part.node_subject is not None for part in policy.parts):
            self._policies.add(policy.key)

    def policy_removed(self, key: PolicyKey) -> None:
        self._policies.discard(key)

    def parts(self, node: str) -> list[tuple[Policy, PolicyPart]]:
        """The (policy, part) pairs whose nodeSelector selects `node`'s host endpoint."""
        if not self._policies:
            return []
        labels = node_labels(self._nodes[node])
        return [
            (policy, part)
            for policy in self._ordered()
            if policy.key in self._policies
            for part in policy.parts
            if part.node_subject is not None and part.node_subject.matches(labels)
        ]

    def compile(self, node: str) -> IdentityPolicy:
        parts = self.parts(node)
        if not parts:
            return UNENFORCED_POLICY
        return IdentityPolicy(
            self._compile_direction(parts, Direction.INGRESS),
            self._compile_direction(parts, Direction.EGRESS),
        )

    def refresh(self, changes: ChangeSet) -> None:
        """Recompile the host endpoints and report each one's minimal entry diff.

        Free when no host policy exists and no host holds entries (the common case).
        """
        if not self._policies and not self.compiled:
            return
        for name in list(self.compiled):
            if name not in self._nodes:
                old = self.compiled.pop(name)
                changes.endpoints[HostKey(name)] = EntryDiff.between(old.entries(), ())
                changes.removed_endpoints.add(HostKey(name))
        for name in sorted(self._nodes):
            old = self.compiled.get(name, UNENFORCED_POLICY)
            new = self.compile(name)
            if new is UNENFORCED_POLICY:
                self.compiled.pop(name, None)
            else:
                self.compiled[name] = new
            if old is not new:
                result = policy_diff(old, new)
                if result:
                    changes.endpoints[HostKey(name)] = result

    def _compile_direction(
        self, parts: list[tuple[Policy, PolicyPart]], direction: Direction
    ) -> DirectionPolicy:
        denies: list[ResolvedRule] = []
        allows: list[ResolvedRule] = []
        isolated_by: list[PolicyKey] = []
        isolation_audited = True  # the default deny only reports if every isolator audits
        for policy, part in parts:
            if direction in part.isolates and policy.tier is Tier.NORMAL:
                isolated_by.append(policy.key)
                isolation_audited = isolation_audited and policy.audit
            for rule in part.rules:
                if rule.direction is not direction:
                    continue
                target = denies if rule.action is Action.DENY else allows
                target.extend(self._resolver.for_host(policy, rule))
        deny_id = (
            self._registry.default_deny(
                direction, tuple(sorted(set(isolated_by))), isolation_audited
            )
            if isolated_by
            else None
        )
        return self._compiler.compile_rules(direction, tuple(denies + allows), deny_id)
