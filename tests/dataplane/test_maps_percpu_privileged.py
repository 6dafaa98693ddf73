"""PerCpuMap reads and writes one value per possible CPU, and sum_per_cpu adds them up, on
the datapath's own per-CPU arrays (``sep_lost``: a u64, ``sep_counters``: a 16-byte
struct)."""

from __future__ import annotations

import ctypes

import pytest

from septum.dataplane import abi
from septum.dataplane.errors import DatapathError
from septum.dataplane.maps import possible_cpus, sum_per_cpu

pytestmark = pytest.mark.privileged


def test_every_possible_cpu_has_its_own_value(testrun_node):
    lost = testrun_node.lost_events_map
    assert lost.cpus == possible_cpus() >= 1
    key = ctypes.c_uint32(0)
    before = lost.lookup(key)
    try:
        lost.update(key, [ctypes.c_uint64(10 + cpu) for cpu in range(lost.cpus)])
        per_cpu = lost.lookup(key)
        assert [value.value for value in per_cpu] == [10 + cpu for cpu in range(lost.cpus)]
        assert sum_per_cpu(per_cpu).value == sum(10 + cpu for cpu in range(lost.cpus))
        assert testrun_node.lost_events() == sum_per_cpu(per_cpu).value
    finally:
        lost.update(key, before)


def test_a_struct_value_is_summed_field_by_field_in_a_batch_read(testrun_node):
    counters = testrun_node.counters_map
    index = abi.counter_index(abi.TrafficDirection.EGRESS, abi.Verdict.DROPPED, 77)
    key = ctypes.c_uint32(index)
    before = counters.lookup(key)
    try:
        written = [
            abi.Counter(packets=cpu + 1, bytes=100 * (cpu + 1)) for cpu in range(counters.cpus)
        ]
        counters.update(key, written)
        entries = dict((k.value, v) for k, v in counters.lookup_batch())
        assert len(entries) == abi.COUNTER_ENTRIES  # an array: every slot, zero or not
        per_cpu = entries[index]
        assert [(v.packets, v.bytes) for v in per_cpu] == [(c.packets, c.bytes) for c in written]
        total = sum_per_cpu(per_cpu)
        assert (total.packets, total.bytes) == (
            sum(c.packets for c in written),
            sum(c.bytes for c in written),
        )
        summed = {k.value: (v.packets, v.bytes) for k, v in counters.lookup_batch_summed()}
        assert summed[index] == (total.packets, total.bytes)
        assert all(value != (0, 0) for value in summed.values())  # zero slots left out
        counted = {
            (k.direction, k.verdict, k.drop_reason): v for k, v in testrun_node.counters().items()
        }
        value = counted[(abi.TrafficDirection.EGRESS, abi.Verdict.DROPPED, 77)]
        assert (value.packets, value.bytes) == (total.packets, total.bytes)
    finally:
        counters.update(key, before)


def test_a_value_per_cpu_is_required(testrun_node):
    lost = testrun_node.lost_events_map
    with pytest.raises(DatapathError, match=r"sep_lost: \d+ values for \d+ CPUs"):
        lost.update(ctypes.c_uint32(0), [ctypes.c_uint64(1)] * (lost.cpus + 1))
