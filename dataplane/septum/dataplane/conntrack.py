"""The conntrack tables (``sep_ct4``/``sep_ct6``): list, flush and collect expired entries.

Deadlines (``CtEntry.expires``) are in the kernel's jiffies, which userspace cannot read
directly: :func:`jiffies_from_test_run` decodes them from a test run of the datapath's own
``septum_jiffies`` program.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

from septum.dataplane import abi
from septum.dataplane.errors import LibbpfError
from septum.dataplane.maps import BpfMap
from septum.dataplane.testrun import TestRunResult

# A minimal frame for BPF_PROG_TEST_RUN of septum_jiffies (tc needs an Ethernet header).
CLOCK_PACKET: Final = bytes(64)
_JIFFIES_BYTES: Final = 8


def jiffies_from_test_run(result: TestRunResult) -> int:
    """jiffies_64 as ``septum_jiffies`` writes it over the start of the packet."""
    if result.retval != 0 or len(result.data_out) < _JIFFIES_BYTES:
        raise LibbpfError(
            f"reading the clock through {abi.PROG_JIFFIES}", 0, f"returned {result.retval}"
        )
    return int.from_bytes(result.data_out[:_JIFFIES_BYTES], sys.byteorder)


class Conntrack:
    """Both conntrack tables; IPv4 keys are widened to ``CtKey`` on the way out."""

    def __init__(
        self,
        ipv4: BpfMap[abi.Ct4Key, abi.CtEntry],
        ipv6: BpfMap[abi.CtKey, abi.CtEntry],
        clock: Callable[[], int],
    ) -> None:
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self._clock = clock  # the kernel's jiffies_64 now

    def _tables(self) -> tuple[BpfMap[Any, abi.CtEntry], ...]:
        return (self.ipv4, self.ipv6)

    def entries(self) -> list[tuple[abi.CtKey, abi.CtEntry]]:
        """Every entry, IPv4 and IPv6."""
        ipv4 = [(key.widened(), entry) for key, entry in self.ipv4.lookup_batch()]
        return ipv4 + self.ipv6.lookup_batch()

    def flush(self, ifindex: int | None = None) -> int:
        """Delete the entries of one interface (None: all); returns how many."""
        flushed = 0
        for table in self._tables():
            doomed = [key for key in table.keys() if ifindex is None or key.ifindex == ifindex]
            for key in doomed:
                table.delete(key)
            flushed += len(doomed)
        return flushed

    def collect_expired(self) -> int:
        """Delete the entries whose deadline has passed; returns how many.  The datapath
        already treats an expired entry as absent; collecting them keeps the LRU from
        evicting live connections to make room, and the listing honest.  An entry is read
        again right before its deletion, so one a packet refreshed since the scan stays (a
        packet landing between that read and the delete can still lose its entry, as in
        Cilium's collector: it is then decided as a new connection)."""
        now = self._clock()
        removed = 0
        for table in self._tables():
            expired = [key for key, entry in table.lookup_batch() if entry.expires < now]
            for key in expired:
                entry = table.lookup(key)
                if entry is not None and entry.expires < now and table.delete(key):
                    removed += 1
        return removed
