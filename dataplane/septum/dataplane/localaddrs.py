"""``sep_local_addrs``: the addresses of this node's pods, by host-side veth.

Local delivery (bpf/lib/localdelivery.h) asks it whether a new connection's destination
is a pod of this node before it asks the node's FIB, and checks that the route found
leads to that pod's veth.  An entry that outlives its pod only costs that FIB lookup:
the route, not this map, decides where a packet goes.
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
from collections.abc import Callable

from septum.dataplane import abi
from septum.dataplane.addressing import host_key
from septum.dataplane.errors import DatapathError
from septum.dataplane.maps import BpfMap

log = logging.getLogger(__name__)


class LocalAddresses:
    """Writes and removes the pods' addresses; the endpoint registry calls it."""

    def __init__(
        self, table: BpfMap[abi.HostKey, abi.LocalAddr], link_address: Callable[[int], bytes]
    ) -> None:
        self.table = table
        self._link_address = link_address  # an interface's Ethernet address (netlink)
        # what this process wrote, per interface: a policy change republishes an endpoint,
        # which then costs no syscall
        self._written: dict[int, frozenset[str]] = {}
        self._macs: dict[int, bytes] = {}

    def publish(self, ifindex: int, addresses: list[str]) -> None:
        """The pod behind `ifindex` (its host veth) has exactly `addresses` (those it had
        before and no longer has are removed), with the veth's Ethernet address.  A map that
        cannot take them costs the pod local delivery only (the stack carries its
        connections): logged, never raised."""
        wanted = frozenset(addresses)
        before = self._written.get(ifindex, frozenset())
        if ifindex in self._written and before == wanted:
            return
        try:
            mac = self._link_address(ifindex)
            for address in before - wanted:
                self._remove(address, ifindex)
            for address in wanted:
                self.table.update(self._key(address), self._value(ifindex, mac))
        except DatapathError as err:
            self._written.pop(ifindex, None)  # written again on the next publish
            log.warning(
                "local delivery: addresses %s of ifindex %d not written: %s",
                sorted(wanted),
                ifindex,
                err,
            )
            return
        self._written[ifindex] = wanted
        self._macs[ifindex] = mac

    def forget(self, ifindex: int) -> None:
        """The interface has no pod behind it any more: its addresses go, those an earlier
        agent of this node wrote included (the map is small; pods are rarely removed).  An
        address another pod holds now (reused) is written again for that pod."""
        self._written.pop(ifindex, None)
        self._macs.pop(ifindex, None)
        for key, value in list(self.table.items()):
            if value.ifindex == ifindex:
                self.table.delete(key)
        for other, addresses in self._written.items():
            for address in addresses:
                key = self._key(address)
                if self.table.lookup(key) is None:
                    self.table.update(key, self._value(other, self._macs[other]))

    def _remove(self, address: str, ifindex: int) -> None:
        key = self._key(address)
        current = self.table.lookup(key)
        if current is not None and current.ifindex == ifindex:  # not a newer pod's
            self.table.delete(key)

    @staticmethod
    def _value(ifindex: int, mac: bytes) -> abi.LocalAddr:
        if len(mac) != 6:
            raise ValueError(f"mac: {mac!r} is not an Ethernet address (6 bytes)")
        return abi.LocalAddr(ifindex=ifindex, mac=(ctypes.c_uint8 * 6)(*mac))

    @staticmethod
    def _key(address: str) -> abi.HostKey:
        return host_key(ipaddress.ip_network(address))
