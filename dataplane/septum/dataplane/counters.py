"""The datapath's packet and byte counters (``sep_counters``, a per-CPU array) by
direction, verdict and drop reason."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from septum.dataplane import abi
from septum.dataplane.maps import PerCpuMap


@dataclass(frozen=True)
class CounterKey:
    direction: abi.TrafficDirection
    verdict: abi.Verdict
    drop_reason: int


@dataclass(frozen=True)
class CounterValue:
    packets: int
    bytes: int


def counter_key(index: int) -> CounterKey:
    """The (direction, verdict, drop reason) of a slot: abi.counter_index backwards."""
    reason = index % abi.DROP_REASON_SLOTS
    verdict = (index // abi.DROP_REASON_SLOTS) % abi.VERDICT_SLOTS
    direction = index // (abi.DROP_REASON_SLOTS * abi.VERDICT_SLOTS)
    return CounterKey(abi.TrafficDirection(direction), abi.Verdict(verdict), reason)


def read_counters(table: PerCpuMap[ctypes.c_uint32, abi.Counter]) -> dict[CounterKey, CounterValue]:
    """The non-zero counters, summed over all CPUs (one BPF_MAP_LOOKUP_BATCH)."""
    counters: dict[CounterKey, CounterValue] = {}
    for index, total in table.lookup_batch_summed():
        if total.packets:
            counters[counter_key(index.value)] = CounterValue(total.packets, total.bytes)
    return counters
