"""A flow's ``source_names`` / ``destination_names``: the names a local pod's DNS lookups gave
the peer's address, as Hubble fills them from the DNS proxy's cache (what ``--fqdn``,
``--from-fqdn`` and ``--to-fqdn`` select).

One hook, kept apart from the decoder: the decoder calls `fill_names` once per flow it builds,
with whatever the metadata offers as ``fqdn_names`` (the agent sets it when its DNS proxy runs;
without one, nothing is filled).  What is cached with names in it (the decoder's templates,
the L7 publisher's frames) is keyed by `cache_generation` too: learning or expiring a name
does not move the metadata's own generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from septum.dataplane.observe.api.flow import flow_pb2


class FqdnNames(Protocol):
    @property
    def generation(self) -> int:
        """Moves (only up) whenever a name is learned for an address or expires."""
        ...

    def names_of(self, endpoint: str, address: str) -> Sequence[str]:
        """The names `endpoint` ("namespace/pod") learned for `address`, sorted, no final dot."""
        ...


def fill_names(flow: flow_pb2.Flow, names: FqdnNames | None) -> None:
    """The destination's names from the source pod's lookups, the source's from the
    destination pod's (a reply from an outside peer names it too)."""
    if names is None:
        return
    source, destination = flow.source, flow.destination
    if source.pod_name:
        found = names.names_of(f"{source.namespace}/{source.pod_name}", flow.IP.destination)
        flow.destination_names.extend(found)
    if destination.pod_name:
        found = names.names_of(f"{destination.namespace}/{destination.pod_name}", flow.IP.source)
        flow.source_names.extend(found)


def cache_generation(metadata: object) -> int:
    """The key of what is cached from `metadata` with names in it: its own generation plus
    its names' (each only grows, so the sum moves whenever either does; 0 for neither)."""
    names: FqdnNames | None = getattr(metadata, "fqdn_names", None)
    own: int = getattr(metadata, "generation", 0)
    return own + (names.generation if names is not None else 0)


__all__ = ["FqdnNames", "cache_generation", "fill_names"]
