"""The effective per-endpoint change of a candidate policy set, readable. Pure: no I/O.

`effective_diff` gives, per endpoint, the datapath entries a change adds and removes; here
each entry becomes a line a person can check: direction, peer (by its labels), protocol and
ports, verdict, and the policy rule that decides it. A removed entry is described with the
current engine, an added one with the candidate (rule ids and CIDR identities are each
engine's own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from septum.operator.engine import Engine, EntryDiff, PolicyEntry
from septum.operator.engine.cluster import EndpointKey
from septum.operator.engine.labels import (
    NAMESPACE_KEY,
    SOURCE_K8S,
    UNTRUSTED_POD_KEY_PREFIXES,
)
from septum.operator.engine.ports import PORT_MAX, PORT_MIN, PROTO_ANY, protocol_name

ADDED = "+"
REMOVED = "-"
REDECIDED = "~"  # the same entry and verdict, decided by another rule now
_CHANGE_ORDER = {REMOVED: 0, REDECIDED: 1, ADDED: 2}


@dataclass(frozen=True, slots=True, order=True)
class EntryLine:
    direction: str  # ingress / egress
    peer: str  # "any peer", "shop/{app=web}", "reserved:host", "cidr:10.0.0.0/8"
    protocol: str  # "TCP", "any"
    ports: str  # "80", "8000-8080", "any"
    change: str  # ADDED / REMOVED / REDECIDED
    verdict: str  # "allow", "deny", with " (audit)" / " (L7 proxy)"
    decided_by: str  # the rule (or default) that decides, as explain words it
    policy: str  # "Kind ns/name" of the deciding policy ("" for a default)
    peer_labels: str  # the peer identity's full label set
    peer_selector: str  # the selector / CIDR / entity text the entry came from

    def as_json(self) -> dict[str, str]:
        return {
            "change": {ADDED: "added", REMOVED: "removed", REDECIDED: "redecided"}[self.change],
            "direction": self.direction,
            "peer": self.peer,
            "peerLabels": self.peer_labels,
            "peerSelector": self.peer_selector,
            "protocol": self.protocol,
            "ports": self.ports,
            "verdict": self.verdict,
            "decidedBy": self.decided_by,
            "policy": self.policy,
        }


@dataclass(frozen=True, slots=True)
class EndpointChange:
    endpoint: str  # "ns/pod" or "host:NODE"
    lines: tuple[EntryLine, ...]

    @property
    def added(self) -> int:
        return sum(line.change == ADDED for line in self.lines)

    @property
    def removed(self) -> int:
        return sum(line.change == REMOVED for line in self.lines)

    @property
    def redecided(self) -> int:
        return sum(line.change == REDECIDED for line in self.lines)


def peer_text(engine: Engine, identity: int) -> tuple[str, str]:
    """(short, full) text of a peer identity: a pod's namespace and own labels, a reserved
    name or a CIDR; the full form is the identity's whole label set."""
    if identity == 0:
        return "any peer", ""
    labels = engine.identities.labels.get(identity)
    if labels is None:
        return f"identity {identity}", ""
    if labels.source == SOURCE_K8S:
        namespace = labels.get(NAMESPACE_KEY) or "?"
        own = ",".join(
            f"{key}={value}"
            for key, value in labels.items
            if not key.startswith(UNTRUSTED_POD_KEY_PREFIXES)
        )
        return f"{namespace}/{{{own}}}", str(labels)
    return str(labels), str(labels)  # reserved:host, cidr:10.0.0.0/8


def _ports(entry: PolicyEntry) -> str:
    if entry.port_lo == PORT_MIN and entry.port_hi == PORT_MAX:
        return "any"
    if entry.port_lo == entry.port_hi:
        return str(entry.port_lo)
    return f"{entry.port_lo}-{entry.port_hi}"


def entry_line(engine: Engine, entry: PolicyEntry, change: str) -> EntryLine:
    info = engine.registry.info(entry.rule_id)
    if info.ref is not None:
        policy = str(info.ref.policy)
    else:
        policy = ", ".join(str(key) for key in info.isolated_by)
    verdict = entry.verdict.value
    if entry.audit:
        verdict += " (audit)"
    if entry.l7:
        verdict += " (L7 proxy)"
    short, full = peer_text(engine, entry.peer_identity)
    return EntryLine(
        direction=entry.direction.value,
        peer=short,
        protocol="any" if entry.protocol == PROTO_ANY else protocol_name(entry.protocol),
        ports=_ports(entry),
        change=change,
        verdict=verdict,
        decided_by=info.describe(""),
        policy=policy,
        peer_labels=full,
        peer_selector=entry.peer_text,
    )


def _line_key(line: EntryLine) -> tuple[str, str, str, str, str]:
    return line.direction, line.peer_labels or line.peer, line.protocol, line.ports, line.verdict


def _merged(removed: list[EntryLine], added: list[EntryLine]) -> list[EntryLine]:
    """An entry removed and added again with the same verdict only changed its deciding
    rule: one `~` line naming the new rule and the old."""
    was = {_line_key(line): line for line in removed}
    lines: list[EntryLine] = []
    for line in added:
        old = was.pop(_line_key(line), None)
        if old is None:
            lines.append(line)
        else:
            lines.append(
                dataclasses.replace(
                    line, change=REDECIDED, decided_by=f"{line.decided_by} (was: {old.decided_by})"
                )
            )
    lines.extend(was.values())
    return sorted(lines, key=lambda line: (*_line_key(line)[:4], _CHANGE_ORDER[line.change]))


def endpoint_changes(
    current: Engine, proposed: Engine, diffs: Mapping[EndpointKey, EntryDiff]
) -> list[EndpointChange]:
    changes = []
    for key in sorted(diffs, key=str):
        diff = diffs[key]
        removed = [entry_line(current, entry, REMOVED) for entry in diff.removed]
        added = [entry_line(proposed, entry, ADDED) for entry in diff.added]
        changes.append(EndpointChange(str(key), tuple(_merged(removed, added))))
    return changes


def summary(changes: list[EndpointChange], endpoints: int) -> str:
    if not changes:
        return f"no change: the candidate leaves all {endpoints} endpoints' entries as they are"
    added = sum(change.added for change in changes)
    removed = sum(change.removed for change in changes)
    redecided = sum(change.redecided for change in changes)
    return (
        f"{len(changes)} of {endpoints} endpoints change: {added} entries added, "
        f"{removed} removed, {redecided} decided by another rule"
    )


def render_text(changes: list[EndpointChange], endpoints: int) -> str:
    """Endpoints with the same change share one block; then the summary line."""
    blocks: dict[tuple[EntryLine, ...], list[str]] = {}
    for change in changes:
        blocks.setdefault(change.lines, []).append(change.endpoint)
    out: list[str] = []
    for lines, names in blocks.items():
        count = f" ({len(names)} endpoints)" if len(names) > 1 else ""
        out.append(f"{', '.join(names)}{count}:")
        rows = [
            (
                line.change,
                line.direction,
                line.peer,
                f"{line.protocol}/{line.ports}",
                line.verdict,
                line.decided_by,
            )
            for line in lines
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(5)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:5], widths, strict=True)]
            out.append("  " + "  ".join([*cells, row[5]]))
    out.append(summary(changes, endpoints))
    return "\n".join(out)


def render_json(changes: list[EndpointChange], endpoints: int) -> dict[str, Any]:
    return {
        "changed": bool(changes),
        "summary": summary(changes, endpoints),
        "endpoints": [
            {
                "endpoint": change.endpoint,
                "added": change.added,
                "removed": change.removed,
                "redecided": change.redecided,
                "entries": [line.as_json() for line in change.lines],
            }
            for change in changes
        ],
    }
