"""The flows whose verdict a candidate policy set would change, and their report. Pure.

`replay` explains each distinct connection on the current and the proposed engine (the
engine's `what_if` loop, over an engine made by `policyinput.proposed_engine`); the rest
words the changes, with the `Seen` tally from `flowconvert` (how many flows each connection
stands for, how the Observers saw them, the flows that could not be placed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from septum.cli.flowconvert import Seen, flow_key
from septum.operator.engine import Engine, Explanation, Flow, WhatIfReport, explain
from septum.operator.engine.explain import DirectionVerdict
from septum.operator.engine.ports import protocol_name
from septum.operator.engine.whatif import FlowChange


def replay(current: Engine, proposed: Engine, flows: Iterable[Flow]) -> WhatIfReport:
    report = WhatIfReport()
    for flow in flows:
        before = explain(current, flow.source, flow.destination, flow.port, flow.protocol)
        after = explain(proposed, flow.source, flow.destination, flow.port, flow.protocol)
        report.flows.append(FlowChange(flow, before, after))
    return report


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...]  # "ingress: deny by policy tier: NetworkPolicy shop/x spec…"

    @property
    def verdict(self) -> str:
        return "ALLOWED" if self.allowed else "DENIED"


def decision(explanation: Explanation) -> Decision:
    """The verdict and the direction(s) that decide it: the denying ones when denied."""
    sides: list[DirectionVerdict] = [
        side for side in (explanation.egress, explanation.ingress) if side is not None
    ]
    if not explanation.allowed:
        sides = [side for side in sides if not side.allowed]
    return Decision(
        explanation.allowed,
        tuple(f"{side.direction.value}: {side.reason}" for side in sides),
    )


@dataclass(frozen=True, slots=True)
class ChangedFlow:
    source: str
    destination: str
    protocol: str
    port: int
    count: int  # flows observed for this connection
    observed: dict[str, int]  # Observer verdict -> flows
    before: Decision
    after: Decision


def changed_flows(report: WhatIfReport, seen: Seen) -> list[ChangedFlow]:
    out = []
    for change in report.changed_flows:
        key = flow_key(change.flow)
        out.append(
            ChangedFlow(
                source=change.before.source.description,
                destination=change.before.destination.description,
                protocol=protocol_name(change.before.protocol),
                port=change.flow.port,
                count=seen.counts[key],
                observed=dict(sorted(seen.observed.get(key, {}).items())),
                before=decision(change.before),
                after=decision(change.after),
            )
        )
    out.sort(key=lambda item: (-item.count, item.source, item.destination, item.port))
    return out


def summary(changed: list[ChangedFlow], seen: Seen) -> str:
    flows = sum(item.count for item in changed)
    parts = [
        f"{len(changed)} of {len(seen.flows)} distinct connections would change "
        f"({flows} of {seen.total} flows)"
    ]
    unplaced = sum(seen.unplaced.values())
    if unplaced:
        parts.append(f"{unplaced} flows could not be placed")
    if seen.host_local:
        parts.append(f"{seen.host_local} node-to-own-pod flows skipped (--allow-localhost)")
    return "; ".join(parts)


def render_text(changed: list[ChangedFlow], seen: Seen, notes: list[str]) -> str:
    out: list[str] = []
    for item in changed:
        out.append(
            f"{item.source} -> {item.destination} {item.protocol}/{item.port}: "
            f"{item.before.verdict} -> {item.after.verdict}  x{item.count}"
        )
        for label, side in (("now", item.before), ("candidate", item.after)):
            for reason in side.reasons:
                out.append(f"    {label}: {reason}")
    for reason, count in sorted(seen.unplaced.items()):
        out.append(f"not placed: {count} flows: {reason} (e.g. {seen.unplaced_examples[reason]})")
    out.extend(f"note: {note}" for note in notes)
    out.append(summary(changed, seen))
    return "\n".join(out)


def render_json(changed: list[ChangedFlow], seen: Seen, notes: list[str]) -> dict[str, Any]:
    def side(value: Decision) -> dict[str, Any]:
        return {"verdict": value.verdict, "decidedBy": list(value.reasons)}

    return {
        "changed": bool(changed),
        "summary": summary(changed, seen),
        "flows": seen.total,
        "connections": len(seen.flows),
        "changedConnections": [
            {
                "source": item.source,
                "destination": item.destination,
                "protocol": item.protocol,
                "port": item.port,
                "flows": item.count,
                "observed": item.observed,
                "current": side(item.before),
                "candidate": side(item.after),
            }
            for item in changed
        ],
        "unplaced": {
            reason: {"flows": count, "example": seen.unplaced_examples[reason]}
            for reason, count in sorted(seen.unplaced.items())
        },
        "hostLocalSkipped": seen.host_local,
        "notes": notes,
    }
