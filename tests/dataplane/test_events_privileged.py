"""The flow-event ring buffer: raw batches, decoding, epoll wake-ups, wrap-around and the
lost-event counter; plus map capacity and prerequisite errors."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from septum.dataplane import abi, prereq
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.errors import MapFullError, PrerequisiteError
from septum.dataplane.events import decode_events, decode_records
from septum.dataplane.packets import DST_MAC, SRC_MAC, tcp4
from septum.dataplane.policy import EndpointPolicy, PolicyEntry

pytestmark = pytest.mark.privileged
PACKET = tcp4("10.99.0.1", "10.99.0.2", 40000, 80)


def emit(node: NodeDatapath, count: int) -> None:
    node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=count)


@pytest.fixture
def small_ring(node_name):
    node = NodeDatapath(DatapathConfig(node_name=node_name, ringbuf_bytes=4096))
    try:
        yield node
    finally:
        node.teardown()


def test_raw_batches_decode_and_wake_up(testrun_node):
    reader = testrun_node.flow_reader()
    reader.read_raw()  # whatever earlier tests of this module left
    assert reader.wait(0.01) is False
    emit(testrun_node, 1000)
    assert reader.wait(None) is True
    raw = reader.read_raw()
    assert len(raw) == 1000 * abi.FLOW_EVENT_SIZE
    flows = decode_events(raw)
    assert all(f.flags == abi.EVENT_F_BENCH for f in flows)
    assert {(f.src_ip, f.dst_ip, f.src_port, f.dst_port) for f in flows} == {
        ("10.99.0.1", "10.99.0.2", 40000, 80)
    }
    # bench_emit reports the test packet's own Ethernet header
    assert {(f.src_mac, f.dst_mac) for f in flows} == {(SRC_MAC.hex(":"), DST_MAC.hex(":"))}
    assert reader.read_raw() == b""


def test_records_with_headers_decode_the_same(testrun_node):
    reader = testrun_node.flow_reader()
    reader.read_raw()
    emit(testrun_node, 10)
    chunk, count = reader.read_records()
    assert count == 10 and len(chunk) == 10 * abi.RINGBUF_RECORD_STRIDE
    assert [f.dst_port for f in decode_records(chunk)] == [80] * 10


def test_wrap_around_and_lost_events(small_ring):
    reader = small_ring.flow_reader()
    capacity = 4096 // abi.RINGBUF_RECORD_STRIDE
    total = 0
    for _ in range(5):  # 5 x 30 records through a ring of 39: wraps several times
        emit(small_ring, 30)
        total += len(reader.read_raw()) // abi.FLOW_EVENT_SIZE
    assert total == 150
    assert small_ring.lost_events() == 0
    emit(small_ring, 100)
    kept = len(reader.read_raw()) // abi.FLOW_EVENT_SIZE
    assert kept <= capacity
    assert small_ring.lost_events() == 100 - kept


def test_full_maps_name_the_setting(node_name):
    node = NodeDatapath(DatapathConfig(node_name=node_name, endpoints=2, policy_entries=4))
    try:
        for index in range(2):
            node.upsert_endpoint(EndpointSpec(index + 1, 5000 + index, 7, attach=False))
        with pytest.raises(MapFullError, match=r"sep_endpoints.*DatapathConfig\.endpoints"):
            node.upsert_endpoint(EndpointSpec(3, 5003, 7, attach=False))
        entries = tuple(PolicyEntry(abi.TrafficDirection.INGRESS, 100 + i, 6, 80) for i in range(5))
        with pytest.raises(MapFullError, match=r"sep_policy.*DatapathConfig\.policy_entries"):
            node.replace_policy(1, EndpointPolicy.selecting(entries))
        assert node.policy(1) == EndpointPolicy(), "a refused policy leaves the old one"
    finally:
        node.teardown()


def test_missing_object_says_make_bpf(node_name, tmp_path):
    config = DatapathConfig(node_name=node_name, bpf_object=tmp_path / "absent.o")
    with pytest.raises(PrerequisiteError, match="make bpf"):
        NodeDatapath(config)


def test_missing_capabilities_say_run_as_root(monkeypatch):
    monkeypatch.setattr(prereq, "_effective_capabilities", lambda: 0)
    with pytest.raises(PrerequisiteError, match="root"):
        prereq.require_capabilities()


def test_teardown_removes_every_pin(node_name):
    node = NodeDatapath(DatapathConfig(node_name=node_name))
    pin_dir = node.pin_dir
    assert (pin_dir / abi.MAP_CONNTRACK4).exists()
    assert (pin_dir / abi.MAP_CONNTRACK6).exists()
    node.teardown()
    assert not pin_dir.exists()
    assert Path("/sys/fs/bpf/septum").exists()


def test_a_second_agent_of_the_same_node_reuses_the_pinned_maps(node_name):
    first = NodeDatapath(DatapathConfig(node_name=node_name))
    try:
        first.upsert_prefix("10.1.2.3/32", 77)
        second = NodeDatapath(DatapathConfig(node_name=node_name))
        try:
            assert [v.identity for _, v in second.ipcache_hosts.items()] == [77]
        finally:
            second.close()
    finally:
        first.teardown()


def test_concurrent_draining_loses_nothing(node_name):
    # The reader publishes its consumer position while the kernel reserves: a torn
    # (byte-by-byte) write of that position made reservations fail with the ring nearly
    # empty (3 of 100,000 lost per run before the fix).
    node = NodeDatapath(DatapathConfig(node_name=node_name, ringbuf_bytes=1 << 24))
    try:
        reader = node.flow_reader()
        stop = threading.Event()
        read = [0]

        def drain() -> None:
            while not stop.is_set():
                if reader.wait(0.05):
                    read[0] += len(reader.read_raw()) // abi.FLOW_EVENT_SIZE

        thread = threading.Thread(target=drain)
        thread.start()
        try:
            pace = threading.Event()  # never set: wait() is the generator's pacing
            for _ in range(40):
                emit(node, 2500)
                # offer 100,000 events/s in 2,500-event bursts (a rate, not a wait for a
                # state): the reader then drains while the kernel reserves, the race
                pace.wait(0.025)
        finally:
            stop.set()
            thread.join()
        read[0] += len(reader.read_raw()) // abi.FLOW_EVENT_SIZE
        assert (read[0], node.lost_events()) == (100_000, 0)
    finally:
        node.teardown()
