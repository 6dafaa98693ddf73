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
    # Pods whose identity number changed (their pod class moved, see podclass), even where
    # their own entries did not: the datapath's endpoint record and the Observer follow it.
    reidentified: set[EndpointKey] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.endpoints
            or self.removed_endpoints
            or self.ipcache_upserts
            or self.ipcache_deletes
            or self.reidentified
        )


@dataclass(frozen=True, slots=True)
class LoadResult:
    changes: ChangeSet
    rejected: dict[str, str]  # "Kind ns/name" -> error text
