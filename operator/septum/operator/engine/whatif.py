"""What-if: evaluate candidate policy changes against flows without applying them.

The candidate state is a copy of the engine with the changes applied through
the normal incremental path, so its per-endpoint diffs are exactly what
applying the changes would do; the live engine is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from septum.operator.engine.cluster import EndpointKey
from septum.operator.engine.entries import EntryDiff
from septum.operator.engine.errors import InvalidPolicy
from septum.operator.engine.explain import Explanation, explain
from septum.operator.engine.parse import policy_key
from septum.operator.engine.rules import PolicyKey
from septum.operator.engine.state import Engine


@dataclass(frozen=True, slots=True)
class Apply:
    """Add or edit a policy (the object as the API server would store it)."""

    obj: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    key: PolicyKey


Change = Apply | Delete


@dataclass(frozen=True, slots=True)
class Flow:
    source: str | Mapping[str, Any]
    destination: str | Mapping[str, Any]
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class FlowChange:
    flow: Flow
    before: Explanation
    after: Explanation

    @property
    def changed(self) -> bool:
        return self.before.allowed != self.after.allowed


@dataclass(slots=True)
class WhatIfReport:
    flows: list[FlowChange] = field(default_factory=list)
    endpoint_diffs: dict[EndpointKey, EntryDiff] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def changed_flows(self) -> list[FlowChange]:
        return [f for f in self.flows if f.changed]


def candidate(engine: Engine, changes: Sequence[Change]) -> tuple[Engine, dict[str, str]]:
    """A copy of `engine` with `changes` applied; invalid changes are reported, not applied."""
    clone = copy.deepcopy(engine)
    rejected: dict[str, str] = {}
    for change in changes:
        if isinstance(change, Delete):
            clone.delete_policy(change.key)
            continue
        try:
            clone.upsert_policy(change.obj)
        except InvalidPolicy as err:
            rejected[str(policy_key(change.obj))] = str(err)
    return clone, rejected


def effective_diff(current: Engine, proposed: Engine) -> dict[EndpointKey, EntryDiff]:
    """Per-endpoint entries to add/remove to go from `current` to `proposed` (same identities)."""
    diffs: dict[EndpointKey, EntryDiff] = {}
    for key in proposed.endpoints():
        before = (
            current.endpoint_policy(key).entries() if key in current.pod_identity else frozenset()
        )
        result = EntryDiff.between(before, proposed.endpoint_policy(key).entries())
        if result:
            diffs[key] = result
    for host in proposed.host_endpoints():
        before = (
            current.endpoint_policy(host).entries() if host.node in current.nodes else frozenset()
        )
        result = EntryDiff.between(before, proposed.endpoint_policy(host).entries())
        if result:
            diffs[host] = result
    return diffs


def what_if(engine: Engine, changes: Sequence[Change], flows: Sequence[Flow]) -> WhatIfReport:
    proposed, rejected = candidate(engine, changes)
    report = WhatIfReport(rejected=rejected)
    report.endpoint_diffs = effective_diff(engine, proposed)
    for flow in flows:
        before = explain(engine, flow.source, flow.destination, flow.port, flow.protocol)
        after = explain(proposed, flow.source, flow.destination, flow.port, flow.protocol)
        report.flows.append(FlowChange(flow, before, after))
    return report
