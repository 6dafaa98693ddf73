"""Pinned maps from an earlier load whose definition differs from the object's (a newer
object, a capacity changed in DatapathConfig) are replaced by fresh maps, never reused and
never a bare EINVAL; compatible pins keep their contents."""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from septum.dataplane import abi, loader
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.errors import LibbpfError

pytestmark = pytest.mark.privileged


@pytest.fixture
def config(node_name: str) -> Iterator[DatapathConfig]:
    cfg = DatapathConfig(node_name=node_name)
    try:
        yield cfg
    finally:
        loader.remove_pins(cfg.pin_dir)


def _replace_pin(config: DatapathConfig, name: str, *definition: str) -> None:
    """Pin, in place of `name`, a map as an older object version would have created it."""
    pin = config.pin_dir / name
    pin.unlink()
    command = ["bpftool", "map", "create", str(pin), *definition, "name", name]
    subprocess.run(command, check=True, capture_output=True)


def test_a_pinned_map_with_another_value_size_is_recreated(config, caplog):
    NodeDatapath(config).close()
    # sep_config's value was 24 bytes before it grew
    _replace_pin(config, abi.MAP_CONFIG, "type", "array", "key", "4", "value", "24", "entries", "1")
    with caplog.at_level(logging.WARNING, logger=loader.__name__):
        node = NodeDatapath(config)
    try:
        assert node.recreated_maps == (abi.MAP_CONFIG,)
        pinned = loader.pinned_definition(config.pin_dir / abi.MAP_CONFIG)
        assert pinned.value_size == ctypes.sizeof(abi.Config)
        # the fresh map holds the configuration again
        [(_, value)] = list(node.config_map.items())
        assert value.ct_timeout_tcp_syn_s == config.ct_timeout_tcp_syn_s
    finally:
        node.close()
    [record] = [r for r in caplog.records if abi.MAP_CONFIG in r.getMessage()]
    assert "value 24" in record.getMessage() and "recreated" in record.getMessage()


def test_a_pinned_map_with_another_key_size_is_recreated(config):
    NodeDatapath(config).close()
    _replace_pin(
        config,
        abi.MAP_DROP_RATELIMIT,
        *("type", "lru_percpu_hash", "key", "8", "value", "8", "entries", "16384"),
    )
    node = NodeDatapath(config)
    try:
        assert node.recreated_maps == (abi.MAP_DROP_RATELIMIT,)
    finally:
        node.close()
    # the recreated pin is compatible: the next load reuses everything
    node = NodeDatapath(config)
    node.close()
    assert node.recreated_maps == ()


def test_a_changed_capacity_recreates_only_that_map(config):
    first = NodeDatapath(config)
    try:
        first.upsert_prefix("10.1.2.3/32", 77)
    finally:
        first.close()
    bigger = DatapathConfig(
        node_name=config.node_name, conntrack_entries=2 * config.conntrack_entries
    )
    second = NodeDatapath(bigger)
    try:
        assert sorted(second.recreated_maps) == [abi.MAP_CONNTRACK4, abi.MAP_CONNTRACK6]
        assert second.conntrack4_map.capacity == bigger.conntrack_entries
        assert second.conntrack6_map.capacity == bigger.conntrack_entries
        # compatible pins kept their contents
        assert [v.identity for _, v in second.ipcache_hosts.items()] == [77]
    finally:
        second.close()
    for name in (abi.MAP_CONNTRACK4, abi.MAP_CONNTRACK6):
        pinned = loader.pinned_definition(config.pin_dir / name)
        assert pinned.max_entries == bigger.conntrack_entries


def test_compatible_pins_are_reused_without_a_warning(config, caplog):
    NodeDatapath(config).close()
    with caplog.at_level(logging.WARNING, logger=loader.__name__):
        node = NodeDatapath(config)
        node.close()
    assert node.recreated_maps == ()
    assert not [r for r in caplog.records if r.name == loader.__name__]


def test_a_rejected_object_leaves_no_pin_directory(tmp_path, node_name):
    """A verifier rejection fails the load with a clear error and leaves nothing pinned."""
    source_root = Path(__file__).resolve().parents[2] / "bpf"
    shutil.copytree(source_root, tmp_path / "bpf")
    program = tmp_path / "bpf" / "septum.bpf.c"
    text = program.read_text()
    empty = "int bench_empty(struct __sk_buff *skb)\n{\n\treturn SEPTUM_TC_FORWARD;\n}"
    assert empty in text
    # a read far past the context: the verifier refuses it
    program.write_text(
        text.replace(
            empty, empty.replace("return SEPTUM_TC_FORWARD;", "return *(int *)((long)skb + 4000);")
        )
    )
    broken = tmp_path / "broken.bpf.o"
    subprocess.run(
        [
            "clang",
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            f"-I{tmp_path / 'bpf' / 'include'}",
            f"-I{tmp_path / 'bpf'}",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
            str(program),
            "-o",
            str(broken),
        ],
        check=True,
        capture_output=True,
    )
    config = DatapathConfig(node_name=node_name, bpf_object=broken)
    with pytest.raises(LibbpfError, match="verifier rejected a program"):
        NodeDatapath(config)
    assert not config.pin_dir.exists()
