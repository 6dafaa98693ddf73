"""A flow's ``source_names`` / ``destination_names``: the names a local pod's DNS lookups gave
the peer's address, as Hubble fills them from the DNS proxy's cache (what ``--fqdn``,
``--from-fqdn`` and ``--to-fqdn`` select).

One hook, kept apart from the decoder: the decoder calls `fill_names` once per flow it builds,
with whatever the metadata offers as ``fqdn_names`` (the agent sets it when its DNS proxy runs;
without one, nothing is filled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from septum.dataplane.observe.api.flow import flow_pb2


class FqdnNames(Protocol):
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


__all__ = ["FqdnNames", "fill_names"]
