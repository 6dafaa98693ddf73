"""The agent's datapath side without a kernel: stale pinned state purged after the first sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from septum.agent.endpoints import LocalEndpoints
from septum.dataplane.endpoints import PinnedEndpoint


class FakeDatapath:
    def __init__(self, stale: list[PinnedEndpoint], prefixes: set[str]) -> None:
        self.stale = stale
        self.prefixes = prefixes

    def remove_unregistered_endpoints(self) -> list[PinnedEndpoint]:
        stale, self.stale = self.stale, []
        return stale

    def remove_prefix(self, prefix: str) -> bool:
        if prefix in self.prefixes:
            self.prefixes.discard(prefix)
            return True
        return False


def local_endpoints(datapath: Any, tmp_path: Path) -> LocalEndpoints:
    endpoints = LocalEndpoints.__new__(LocalEndpoints)
    endpoints.datapath = datapath
    endpoints.state_dir = tmp_path
    endpoints.records = {}
    endpoints.written = {}
    endpoints.audit = {}
    endpoints.ipcache = {}
    return endpoints


def test_stale_endpoints_and_their_addresses_go_unless_a_live_pod_took_them(
    tmp_path: Path,
) -> None:
    datapath = FakeDatapath(
        [
            PinnedEndpoint(7, 12, None, "10.0.0.7"),
            PinnedEndpoint(8, 13, "veth8", "10.0.0.8", "fd00::8"),
        ],
        {"10.0.0.7/32", "10.0.0.8/32", "fd00::8/128", "10.0.0.9/32", "10.0.0.1/32"},
    )
    endpoints = local_endpoints(datapath, tmp_path)
    endpoints.ipcache = {"10.0.0.8/32": 300, "10.0.0.1/32": 1}  # written since: a live pod's
    removed = endpoints.purge_unregistered(departed_ips=["10.0.0.9"])
    assert removed == [
        "endpoint 7 (gone)",
        "endpoint 8 (veth8)",
        "ipcache 10.0.0.7/32",
        "ipcache 10.0.0.9/32",
        "ipcache fd00::8/128",
    ]
    assert datapath.prefixes == {"10.0.0.8/32", "10.0.0.1/32"}
    assert endpoints.purge_unregistered() == []
