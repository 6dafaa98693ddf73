"""`septum bench flows`: the flow pipeline's throughput, losses, stream rate, CPU and memory.

Phases (one process for the agent side, a separate process for the client):
- max_ingest_per_s: the datapath's `bench_emit` program (BPF_PROG_TEST_RUN, one
  event per run) fills the kernel ring buffer as fast as the reader drains it;
  events per second decoded into compact records and stored in the flow ring
  (enrichment happens when a reader asks for a flow: none here).
- lost_at_100k_per_s / agent_cpu_pct_at_100k_per_s: the same source paced at
  100,000 events/s for a few seconds: kernel ring-buffer overruns plus
  anything never ingested; CPU of the agent's threads (process CPU minus the
  load generator's thread).
- stream_flows_per_s: one following GetFlows client (another process, over the
  unix socket) while enriched synthetic flows arrive at 100,000/s, faster than
  it can read: flows per second it receives, one flow per message. The client
  is the real `hubble observe -f -o compact` (Go, grpc-go) by default: Python
  grpcio cannot read much more than ~20k messages/s itself, so with it
  (`--stream-client grpcio`) the figure measures the client, not the server;
  hubble's `-o jsonpb` is bound by its own JSON marshalling the same way.
- agent_rss_mb: resident memory of the agent process at the end.

Without root or a built BPF object the kernel phases fall back to an in-memory
feed of identical records (reported in the table), never to a guess.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

# Kernel ring buffer of the benchmark datapath: the agent's default (4 MiB).
RINGBUF_BYTES = 1 << 22

TARGETS = {
    "max_ingest_per_s": (">=", 200_000.0),
    "lost_at_100k_per_s": ("<=", 0.0),
    "stream_flows_per_s": (">=", 20_000.0),
    "agent_cpu_pct_at_100k_per_s": ("", 0.0),
    "agent_rss_mb": ("<=", 150.0),
}

_CLIENT = r"""
import os, sys, time
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc
from septum.dataplane.observe.api.observer import observer_pb2
target, seconds = sys.argv[1], float(sys.argv[2])
channel = grpc.insecure_channel(target)
call = channel.unary_stream(
    "/observer.Observer/GetFlows",
    request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
    response_deserializer=None,  # count raw messages: the client's cost is not the server's
)
stream = call(observer_pb2.GetFlowsRequest(follow=True))
count = lost_messages = 0
start = None
for message in stream:
    if start is None:
        start = time.perf_counter()
        continue
    if message[:1] == b"\x1a":  # field 3: a LostEvent
        lost_messages += 1
    else:
        count += 1
    if time.perf_counter() - start >= seconds:
        break
elapsed = time.perf_counter() - start
stream.cancel()
print(count / elapsed, lost_messages, flush=True)
"""


# Runs `hubble observe -f -o compact` and counts the flow lines it prints
# (lost-event lines are not flows); reading 1 MiB chunks costs this process
# far less than hubble's work per flow.
_HUBBLE_CLIENT = r"""
import os, subprocess, sys, time
hubble, target, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
proc = subprocess.Popen(
    [hubble, "observe", "-f", "-o", "compact", "--server", target],
    stdout=subprocess.PIPE, env={**os.environ, "HOME": sys.argv[4]},
)
fd = proc.stdout.fileno()
count = lost_lines = 0
start = None
try:
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            sys.exit("hubble observe ended early (exit %s)" % proc.wait())
        if start is None:
            start = time.perf_counter()
            continue
        lost = chunk.count(b"EVENTS LOST")
        lost_lines += lost
        count += chunk.count(b"\n") - lost
        if time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
finally:
    proc.kill()
    proc.wait()
print(count / elapsed, lost_lines, flush=True)
"""

STREAM_CLIENTS = ("hubble", "grpcio")
# Offered to the follower: more than any one client here can take.
STREAM_OFFER_PER_TICK = 1000  # every 10 ms: 100,000 flows/s


def _hubble_binary() -> str:
    """The hubble CLI the tests use (lab/gobuild/build-hubble.sh builds or finds it)."""
    script = Path(__file__).resolve().parents[3] / "lab/gobuild/build-hubble.sh"
    if not script.is_file():
        raise click.ClickException(
            f"--stream-client hubble: {script} not found (use --stream-client grpcio)"
        )
    out = subprocess.run([str(script), "--path"], capture_output=True, text=True, check=False)
    path = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    if out.returncode != 0 or not Path(path).is_file():
        raise click.ClickException(
            "--stream-client hubble: cannot build the hubble CLI (make hubble): "
            f"{out.stderr.strip()[-300:]} (or use --stream-client grpcio)"
        )
    return path


@dataclass
class _Emitter:
    """Produces events: the kernel's bench_emit program, or an in-memory feed."""

    emit: Callable[[int], None]
    kernel: bool
    close: Callable[[], None]


def _tcp_syn_frame() -> bytes:
    import struct

    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(tcp),
        1,
        0,
        64,
        6,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    return eth + ip + tcp


def _synthetic_batch(count: int) -> bytes:
    """Enriched-looking events: two known pods, varied source ports, allowed TCP SYNs."""
    from septum.dataplane.observe import record as r

    now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    src = bytes([10, 0, 0, 1]) + bytes(12)
    dst = bytes([10, 0, 0, 2]) + bytes(12)
    return b"".join(
        r.pack(
            time_ns=now,
            bytes=74,
            packets=1,
            src_addr=src,
            dst_addr=dst,
            src_identity=1001,
            dst_identity=1002,
            endpoint_id=12,
            src_port=10000 + i % 50000,
            dst_port=80,
            protocol=6,
            tcp_flags=2,
            ip_version=1,
            event_type=5,
            verdict=1,
            direction=1,
            trace_point=101,
            match_type=2,
            rule_id=1,
        )
        for i in range(count)
    )


def _metadata() -> Any:
    from septum.dataplane.observe.metadata import EndpointInfo, PolicyInfo, StaticMetadata

    md = StaticMetadata()
    md.add_endpoint(
        EndpointInfo(11, 1001, "default", "xwing", ("k8s:app=xwing",), ips=("10.0.0.1",))
    )
    md.add_endpoint(
        EndpointInfo(12, 1002, "empire", "deathstar", ("k8s:app=deathstar",), ips=("10.0.0.2",))
    )
    md.add_policy(1, PolicyInfo("rule1", "empire", "CiliumNetworkPolicy"))
    return md


def _kernel_source() -> tuple[Any, _Emitter] | None:
    """A real datapath (own pins, removed afterwards) and its bench_emit program."""
    if os.geteuid() != 0:
        return None
    try:
        from septum.dataplane.config import DatapathConfig
        from septum.dataplane.datapath import NodeDatapath
        from septum.dataplane.observe.sources import DatapathSource
        from septum.dataplane.prereq import DEFAULT_OBJECT
    except ImportError:
        return None
    if not Path(DEFAULT_OBJECT).is_file():
        return None
    datapath = NodeDatapath(
        DatapathConfig(node_name=f"sfl-bench-{os.getpid()}", ringbuf_bytes=RINGBUF_BYTES)
    )
    frame = _tcp_syn_frame()

    def emit(count: int) -> None:
        datapath.test_run("bench_emit", frame, repeat=count)

    return DatapathSource(datapath), _Emitter(emit, True, datapath.teardown)


def _feed_source() -> tuple[Any, _Emitter]:
    from septum.dataplane.observe.sources import FeedSource

    feed = FeedSource()
    batch = _synthetic_batch(1000)

    def emit(count: int) -> None:
        for _ in range(count // 1000):
            feed.push(batch)

    return feed, _Emitter(emit, False, lambda: None)


def _observer(source: Any, socket_dir: Path, capacity: int = 4095) -> Any:
    from septum.dataplane.observe.node import NodeObserver, ObserveConfig
    from septum.dataplane.observe.server import ListenConfig

    config = ObserveConfig(
        node_name="sfl-bench",
        listen=ListenConfig(unix_socket=socket_dir / "observer.sock"),
        buffer_capacity=capacity,
    )
    return NodeObserver(config, source, _metadata())


def _thread_cpu_s() -> float:
    return time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)


def _process_cpu_s() -> float:
    return time.clock_gettime(time.CLOCK_PROCESS_CPUTIME_ID)


def _wait_drained(node: Any, target: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while node.pipeline.ingested + sum(node.ring.lost_by_source.values()) < target:
        if time.monotonic() > deadline:
            return
        time.sleep(0.01)


def _max_ingest(node: Any, emitter: _Emitter, seconds: float) -> float:
    """Producer keeps the kernel ring buffer topped up; rate of what the pipeline ingests."""
    chunk = 2048
    backlog_limit = 16_384  # stays well inside the ring buffer: measures the reader
    emitted = 0
    start_ingested = node.pipeline.ingested
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if emitted - (node.pipeline.ingested - start_ingested) < backlog_limit:
            emitter.emit(chunk)
            emitted += chunk
        else:
            time.sleep(0.0002)
    elapsed = time.perf_counter() - start
    ingested = node.pipeline.ingested - start_ingested
    _wait_drained(node, node.pipeline.ingested + (emitted - ingested))
    return float(ingested) / elapsed


def _paced(node: Any, emitter: _Emitter, rate: int, seconds: float) -> tuple[int, float]:
    """Offer `rate` events/s; returns (lost, agent CPU %)."""
    tick_s = 0.01
    per_tick = rate // 100
    lost_before = sum(node.ring.lost_by_source.values())
    ingested_before = node.pipeline.ingested
    cpu_process, cpu_producer = _process_cpu_s(), _thread_cpu_s()
    start = time.perf_counter()
    emitted = 0
    next_tick = start
    while next_tick - start < seconds:
        emitter.emit(per_tick)
        emitted += per_tick
        next_tick += tick_s
        delay = next_tick - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.perf_counter() - start
    agent_cpu = (_process_cpu_s() - cpu_process) - (_thread_cpu_s() - cpu_producer)
    _wait_drained(node, ingested_before + emitted)
    ingested = node.pipeline.ingested - ingested_before
    lost = max(emitted - ingested, sum(node.ring.lost_by_source.values()) - lost_before)
    return lost, 100.0 * agent_cpu / elapsed


def _stream(seconds: float, socket_dir: Path, client: str = "hubble") -> float:
    """One following client in another process while flows arrive faster than it reads."""
    from septum.dataplane.observe.sources import FeedSource

    hubble = _hubble_binary() if client == "hubble" else ""
    feed = FeedSource()
    node = _observer(feed, socket_dir)
    node.start()
    stop = threading.Event()
    batch = _synthetic_batch(STREAM_OFFER_PER_TICK)

    def offer() -> None:  # 100,000 enriched flows/s, more than one client can take
        while not stop.is_set():
            feed.push(batch)
            time.sleep(0.01)

    feeder = threading.Thread(target=offer, daemon=True)
    target = f"unix://{socket_dir / 'observer.sock'}"
    if client == "hubble":
        argv = [sys.executable, "-c", _HUBBLE_CLIENT, hubble, target, str(seconds), str(socket_dir)]
    else:
        argv = [sys.executable, "-c", _CLIENT, target, str(seconds)]
    process: subprocess.Popen[str] | None = None
    try:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        feeder.start()
        out, err = process.communicate(timeout=seconds + 60)
        if process.returncode != 0:
            raise click.ClickException(f"stream client ({client}) failed: {err.strip()}")
        return float(out.split()[0])
    finally:
        if process is not None and process.poll() is None:
            process.kill()  # never leave the client behind, even on a timeout
            process.communicate()
        stop.set()
        if feeder.is_alive():
            feeder.join(5)
        node.stop()


def run(seconds: float, stream_client: str = "hubble") -> tuple[dict[str, float], str]:
    import psutil  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="sfl-bench-") as tmp:
        socket_dir = Path(tmp)
        kernel = _kernel_source()
        source, emitter = kernel if kernel is not None else _feed_source()
        node = _observer(source, socket_dir)
        node.start()
        try:
            max_ingest = _max_ingest(node, emitter, seconds)
            lost, cpu = _paced(node, emitter, 100_000, seconds)
        finally:
            node.stop()
            emitter.close()
        stream_dir = socket_dir / "stream"
        stream_dir.mkdir()
        stream = _stream(seconds, stream_dir, stream_client)
        rss_mb = psutil.Process().memory_info().rss / (1024 * 1024)
    results = {
        "max_ingest_per_s": round(max_ingest),
        "lost_at_100k_per_s": lost,
        "stream_flows_per_s": round(stream),
        "agent_cpu_pct_at_100k_per_s": round(cpu, 1),
        "agent_rss_mb": round(rss_mb, 1),
    }
    return results, "kernel ring buffer (bench_emit)" if emitter.kernel else "in-memory feed"


@click.command("flows")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--seconds", type=float, default=4.0, show_default=True, help="Length of each phase.")
@click.option(
    "--stream-client",
    type=click.Choice(STREAM_CLIENTS),
    default="hubble",
    show_default=True,
    help="The following client for stream_flows_per_s: the real hubble CLI (-o compact), "
    "or a Python grpcio client (itself the limit near 20k messages/s).",
)
def command(as_json: bool, seconds: float, stream_client: str) -> None:
    """Flow pipeline: ingest rate, losses at 100k/s, one follower's stream rate, CPU, RSS."""
    results, source = run(seconds, stream_client)
    if as_json:
        click.echo(json.dumps(results))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"septum bench flows ({platform.node()}, {os.cpu_count()} cores; "
        f"events from {source}; follower: {stream_client})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for key, value in results.items():
        op, target = TARGETS[key]
        table.add_row(key, f"{value:,}", f"{op} {target:,.0f}" if op else "-")
    Console().print(table)
