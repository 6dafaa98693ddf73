"""What one update produced: per-endpoint entry diffs and ipcache changes."""

from __future__ import annotations

from dataclasses import dataclass, field

from septum.operator.engine.cluster import EndpointKey
from septum.operator.engine.entries import EntryDiff
from septum.operator.engine.rules import IPNetwork


@dataclass(slots=True)
class ChangeSet:
    endpoints: dict[EndpointKey, EntryDiff] = field(default_factory=dict)
    removed_endpoints: set[EndpointKey] = field(default_factory=set)
    ipcache_upserts: dict[IPNetwork, int] = field(default_factory=dict)
    ipcache_deletes: set[IPNetwork] = field(default_factory=set)
    recompiled_identities: int = 0

    def __bool__(self) -> bool:
        return bool(
            self.endpoints or self.removed_endpoints or self.ipcache_upserts or self.ipcache_deletes
        )


@dataclass(frozen=True, slots=True)
class LoadResult:
    changes: ChangeSet
    rejected: dict[str, str]  # "Kind ns/name" -> error text
