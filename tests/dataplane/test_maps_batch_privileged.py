"""BpfMap.delete_batch deletes with BPF_MAP_DELETE_BATCH where the map type has it, and
ignores missing keys wherever they sit in the batch (the kernel stops at the first one)."""

from __future__ import annotations

import ctypes
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from septum.dataplane import abi
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.libbpf import check, lib
from septum.dataplane.maps import BpfMap

pytestmark = pytest.mark.privileged


@pytest.fixture
def datapath(node_name: str) -> Iterator[NodeDatapath]:
    node = NodeDatapath(DatapathConfig(node_name=node_name))
    try:
        yield node
    finally:
        node.teardown()


def _host(last_octet: int) -> abi.HostKey:
    addr = bytes([10, 77, 0, last_octet]).ljust(16, b"\0")
    return abi.HostKey(family=abi.IPVersion.V4, addr=(ctypes.c_uint8 * 16)(*addr))


def _ct4(sport: int) -> abi.Ct4Key:
    return abi.Ct4Key(
        src_addr=(ctypes.c_uint8 * 4)(10, 0, 0, 1),
        dst_addr=(ctypes.c_uint8 * 4)(10, 0, 0, 2),
        sport_be=sport,
        dport_be=80,
        ifindex_protocol=6,
    )


def _remaining(table: BpfMap, identify) -> list[int]:
    return sorted(identify(key) for key in table.keys())


def test_a_hash_map_deletes_in_batches_and_ignores_missing_keys(datapath):
    table = datapath.ipcache_hosts
    for octet in range(1, 9):
        table.update(_host(octet), abi.IpcacheValue(identity=100 + octet))
    # missing keys first, last, alone and in a row, around present ones
    batch = [_host(o) for o in (200, 1, 2, 201, 202, 3, 4, 203, 5, 204)]
    table.delete_batch(batch)
    assert _remaining(table, lambda key: key.addr[3]) == [6, 7, 8]
    # the kernel did the deleting: a map type without BPF_MAP_DELETE_BATCH records False
    assert table._delete_batch_supported is True


def test_an_lru_hash_map_deletes_a_batch_of_only_missing_keys_without_error(datapath):
    table = datapath.conntrack4_map
    for sport in (1000, 1001, 1002):
        table.update(_ct4(sport), abi.CtEntry())
    table.delete_batch([_ct4(sport) for sport in (2000, 2001)])
    assert _remaining(table, lambda key: key.sport_be) == [1000, 1001, 1002]
    table.delete_batch([_ct4(sport) for sport in (1001, 2000, 1000, 1002, 2001)])
    assert _remaining(table, lambda key: key.sport_be) == []
    table.delete_batch([])


@pytest.fixture
def devmap() -> Iterator[BpfMap]:
    """A map type that deletes but has no delete batch (devmap_hash), pinned for the test."""
    pin = Path("/sys/fs/bpf") / f"t-devmap-{secrets.token_hex(3)}"
    subprocess.run(
        ["bpftool", "map", "create", str(pin), "type", "devmap_hash"]
        + ["key", "4", "value", "4", "entries", "8", "name", "t_devmap"],
        check=True,
        capture_output=True,
    )
    try:
        fd = check(lib().bpf_obj_get(str(pin).encode()), "opening the test devmap")
        try:
            yield BpfMap("t_devmap", fd, ctypes.c_uint32, ctypes.c_uint32, 8, "(test)")
        finally:
            os.close(fd)
    finally:
        pin.unlink()


def test_a_map_type_without_delete_batch_falls_back_to_one_key_at_a_time(devmap):
    loopback_ifindex = ctypes.c_uint32(1)
    for slot in (1, 2, 3):
        devmap.update(ctypes.c_uint32(slot), loopback_ifindex)
    devmap.delete_batch([ctypes.c_uint32(slot) for slot in (7, 1, 3)])
    assert _remaining(devmap, lambda key: key.value) == [2]
    assert devmap._delete_batch_supported is False
    # remembered: the next batch goes straight to per-key deletes
    devmap.delete_batch([ctypes.c_uint32(2), ctypes.c_uint32(6)])
    assert _remaining(devmap, lambda key: key.value) == []
