"""The agent's own flow ingest, attached to a bench node while Septum is measured: the
agent always runs it, so a figure taken without it leaves out what the events cost.

It is the agent's pipeline, not a stand-in: DatapathSource on the node's ring buffer
(wake-ups coalesced as the agent's are, septum.dataplane.ringbuf), records unpacked into
a FlowRing of the agent's default size, Hubble's metrics counted.  Flows are decoded only
when someone asks for them, as in the agent.  iptables has no equivalent to attach: it
sends no events.

For the connection-rate runs it runs in a process of its own, as the agent does: in the
bench's process it would take the interpreter lock from the server's accept loop, a cost
no node has."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event

from septum.dataplane.datapath import NodeDatapath
from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.metadata import StaticMetadata
from septum.dataplane.observe.metrics import FlowMetrics
from septum.dataplane.observe.pipeline import FlowPipeline
from septum.dataplane.observe.ring import DEFAULT_CAPACITY, FlowRing
from septum.dataplane.observe.sources import DatapathSource

_START_S = 10.0  # for the process to attach (fork, imports done) and to report at the end


@contextmanager
def agent_ingest(node: NodeDatapath, node_name: str) -> Iterator[FlowPipeline]:
    """The agent's ingest thread on `node`'s ring while the block runs; what is still in
    the ring when it ends is taken before the thread stops (pipeline.ingested counts it)."""
    decoder = FlowDecoder(StaticMetadata(), DecoderConfig(node_name=node_name))
    source = DatapathSource(node)
    pipeline = FlowPipeline(source, FlowRing(decoder, DEFAULT_CAPACITY), FlowMetrics())
    pipeline.start()
    try:
        yield pipeline
    finally:
        pipeline.stop()
        while pipeline.process(source.read_batch(0.0)):
            pass


@dataclass
class IngestCount:
    """Set when the block has ended."""

    ingested: int = 0
    cpu_s: float = 0.0  # the process's CPU time (all threads) from attaching to the end


def _serve(
    node: NodeDatapath, node_name: str, ready: Event, stop: Event, report: Connection
) -> None:
    try:
        started = time.process_time()
        with agent_ingest(node, node_name) as pipeline:
            ready.set()
            stop.wait()
        report.send((pipeline.ingested, time.process_time() - started))
    except BaseException as err:  # reported to the bench, which raises it
        report.send(f"{type(err).__name__}: {err}")


@contextmanager
def agent_ingest_process(node: NodeDatapath, node_name: str) -> Iterator[IngestCount]:
    """agent_ingest in a forked process (it inherits the node's ring) while the block
    runs; the bench's own process does not read the ring meanwhile.  The count of events
    it took is in the yielded IngestCount once the block has ended."""
    context = multiprocessing.get_context("fork")
    ready, stop = context.Event(), context.Event()
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=_serve, args=(node, node_name, ready, stop, send), name="bench-agent-ingest"
    )
    process.start()
    count = IngestCount()
    try:
        if not ready.wait(_START_S):
            raise RuntimeError("the agent ingest process did not start")
        yield count
    finally:
        stop.set()
        answer = receive.recv() if receive.poll(_START_S) else "no answer"
        process.join(_START_S)
        if process.is_alive():
            process.kill()
            process.join()
        receive.close()
        send.close()
    if isinstance(answer, str):
        raise RuntimeError(f"the agent ingest process failed: {answer}")
    count.ingested, count.cpu_s = answer
