"""Wake-up coalescing of the flow-ring reader (septum.dataplane.ringbuf): a busy reader
pauses before it looks again and takes what came meanwhile in one batch, without being
woken; an idle reader is woken by the first record; timeouts hold; a bad pause is refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from septum.dataplane import abi
from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.errors import DatapathError
from septum.dataplane.packets import tcp4
from septum.dataplane.ringbuf import COALESCE_S, RingBufferReader

pytestmark = pytest.mark.privileged
PACKET = tcp4("10.99.1.1", "10.99.1.2", 41000, 80)


def emit_singles(node: NodeDatapath, count: int, delay_s: float) -> threading.Thread:
    """`count` events, one test run each, starting after `delay_s`, from another thread."""

    def run() -> None:
        time.sleep(delay_s)
        for _ in range(count):
            node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=1)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.fixture
def reader(testrun_node: NodeDatapath) -> Iterator[RingBufferReader]:
    ring = testrun_node.flow_reader()
    while ring.read_records()[1]:  # what earlier tests left
        pass
    ring.wait(0)  # takes the pause a read of leftovers armed: the reader starts idle
    try:
        yield ring
    finally:
        ring.coalesce_s = COALESCE_S


@pytest.mark.parametrize("already_waiting", [0, 2])
def test_busy_reader_takes_the_records_of_its_pause_in_one_batch(
    testrun_node, reader, already_waiting
):
    reader.coalesce_s = 0.5
    testrun_node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=1)
    assert reader.wait(None) is True
    assert reader.read_records()[1] == 1  # found records: the next wait pauses first
    # Records already waiting do not cut the pause short: under a steady stream the next
    # batch's first records are always there by the time one batch has been handled, and
    # looking again at once would take them one or two at a time.
    if already_waiting:
        testrun_node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=already_waiting)
    emitter = emit_singles(testrun_node, 5 - already_waiting, delay_s=0.1)
    started = time.monotonic()
    assert reader.wait(None) is True
    waited = time.monotonic() - started
    emitter.join()
    # Records came 0.1 s in; an epoll wake-up would have returned then.  The reader
    # looked only when its pause was over, and took all five at once.
    assert waited >= 0.5
    assert reader.read_records()[1] == 5


def test_idle_reader_is_woken_by_the_first_record(testrun_node, reader):
    reader.coalesce_s = 1.0
    emitter = emit_singles(testrun_node, 1, delay_s=0.1)
    started = time.monotonic()
    assert reader.wait(None) is True
    waited = time.monotonic() - started
    emitter.join()
    assert waited < 1.0  # not the pause: nothing was read since the last one
    assert reader.read_records()[1] == 1


def test_timeouts_bound_the_pause(testrun_node, reader):
    reader.coalesce_s = 1.0
    testrun_node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=1)
    assert reader.read_records()[1] == 1
    started = time.monotonic()
    assert reader.wait(0.05) is False
    assert time.monotonic() - started < 1.0
    assert reader.wait(0.01) is False  # the pause was taken: epoll again


@pytest.mark.parametrize("pause", [-0.001, 1.5, float("nan")])
def test_a_pause_out_of_range_names_the_argument(pause):
    with pytest.raises(DatapathError, match="coalesce_s"):
        RingBufferReader(-1, 4096, coalesce_s=pause)


def test_reader_a_quarter_of_the_ring_behind_reads_on_without_pausing(testrun_node, reader):
    reader.coalesce_s = 1.0
    testrun_node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=1)
    assert reader.read_records()[1] == 1
    behind = reader.size_bytes // 4 // abi.RINGBUF_RECORD_STRIDE + 1
    testrun_node.test_run(abi.PROG_BENCH_EMIT, PACKET, repeat=behind)
    started = time.monotonic()
    assert reader.wait(None) is True
    assert time.monotonic() - started < 0.5  # no pause: it must not let the ring fill
    taken = 0
    while taken < behind:
        taken += reader.read_records()[1]
    assert taken == behind
