"""The ipcache: which security identity an address belongs to.

Host prefixes (/32, /128) go to an exact-match hash (``sep_ipcache_h``), the others to an
LPM trie (``sep_ipcache``), which the datapath consults after a host miss.  A batch of
prefixes is written all or nothing: when a map fills half-way, what was written is put
back as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from septum.dataplane import abi
from septum.dataplane.addressing import check_identity, host_key, is_host, lpm_key, parse_prefix
from septum.dataplane.errors import MapFullError
from septum.dataplane.maps import BpfMap


class Ipcache:
    """Writes prefix -> identity mappings; this process is the maps' only writer."""

    def __init__(
        self,
        hosts: BpfMap[abi.HostKey, abi.IpcacheValue],
        cidrs: BpfMap[abi.LpmAddrKey, abi.IpcacheValue],
    ) -> None:
        self.hosts = hosts
        self.cidrs = cidrs
        # the trie's exact contents by key bytes (None: not read yet); see _cidr_contents
        self._cidr_mirror: dict[bytes, abi.IpcacheValue] | None = None

    def upsert(self, prefixes: Mapping[str, int]) -> None:
        """Map many prefixes to identities: all of them, or (on an invalid prefix or
        identity, or a full map) none -- the ipcache is left as it was."""
        hosts: list[tuple[abi.HostKey, abi.IpcacheValue]] = []
        cidrs: list[tuple[abi.LpmAddrKey, abi.IpcacheValue]] = []
        for cidr, identity in prefixes.items():
            network = parse_prefix(cidr)
            check_identity(f"identity of prefix {cidr!r}", identity)
            value = abi.IpcacheValue(identity=identity)
            if is_host(network):
                hosts.append((host_key(network), value))
            else:
                cidrs.append((lpm_key(network), value))
        writes: list[tuple[BpfMap[Any, abi.IpcacheValue], list[Any]]] = [
            (self.hosts, hosts),
            (self.cidrs, cidrs),
        ]
        # what each key maps to now, to put back if a map fills up half-way (the trie's
        # lookup is a longest-prefix match: its exact contents are mirrored here)
        exact_cidrs = self._cidr_contents() if cidrs else {}
        before = [
            [self.hosts.lookup(key) for key, _ in hosts],
            [exact_cidrs.get(bytes(key)) for key, _ in cidrs],
        ]
        try:
            for table, items in writes:
                table.update_batch([k for k, _ in items], [v for _, v in items])
        except MapFullError:
            for (table, items), previous in zip(writes, before, strict=True):
                for (key, _), old in zip(items, previous, strict=True):
                    if old is None:
                        table.delete(key)
                    else:
                        table.update(key, old)
            raise
        for key, value in cidrs:
            exact_cidrs[bytes(key)] = value

    def _cidr_contents(self) -> dict[bytes, abi.IpcacheValue]:
        """The CIDR trie's exact keys and values: read from the map once (a restarted agent
        finds an earlier one's), then kept by this process, the map's only writer."""
        if self._cidr_mirror is None:
            self._cidr_mirror = {bytes(k): v for k, v in self.cidrs.items()}
        return self._cidr_mirror

    def remove(self, cidr: str) -> bool:
        """Forget a prefix; False when it was not mapped."""
        network = parse_prefix(cidr)
        if is_host(network):
            return self.hosts.delete(host_key(network))
        key = lpm_key(network)
        if self._cidr_mirror is not None:
            self._cidr_mirror.pop(bytes(key), None)
        return self.cidrs.delete(key)
