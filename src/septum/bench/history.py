"""`septum bench history`: the flow store's ingest rate, size on disk and query latency.

- ingest_per_s: the highest rate, in steps of 25k/s from 100k/s, at which the live path
  with history on (FlowPipeline: unpack -> ring -> history queue, batches offered on a
  clock as the datapath delivers them; the writer thread encodes and inserts into chDB
  concurrently) stored every flow: flows/s until the store holds them all, lost = 0.
  0 means even 100k/s lost flows. Also reported: the same pipeline unpaced with history
  on (what it offered and what the store could not take — counted, as designed), and
  the baseline of the same run: the pipeline with history off (ring only).
- bytes_per_flow: bytes on disk of both tables (flows + shapes) per stored flow, after
  `--flows` synthetic flows spread over the last 24 h were loaded and merged.
- q_drops_ns_24h_ms: `hubble observe --since 24h --verdict DROPPED --namespace X` as the
  Observer answers it (HistoryReader: SQL pushdown, pages, Flows rebuilt, every message).
- q_top_dest_1h_ms: the top 10 destinations of pod Y in the last hour (SQL on the store).

The synthetic cluster: 20 namespaces x 25 pods, connections to a few ports, 5% drops,
random ephemeral source ports; the flows of a connection repeat, as real traffic does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.decoder import DecoderConfig, FlowDecoder
from septum.dataplane.observe.filters import FlowSelection
from septum.dataplane.observe.history.query import HistoryReader
from septum.dataplane.observe.history.store import ChdbStore, create_tables, disk_usage
from septum.dataplane.observe.history.writer import HistoryWriter, WriterConfig, _Flows
from septum.dataplane.observe.metadata import EndpointInfo, PolicyInfo, StaticMetadata
from septum.dataplane.observe.pipeline import FlowPipeline
from septum.dataplane.observe.query import CaughtUp, FlowQuery, Paused
from septum.dataplane.observe.ring import FlowRing
from septum.dataplane.observe.sources import FeedSource

TARGETS = {
    "ingest_per_s": (">=", 100_000.0),
    "bytes_per_flow": ("<=", 40.0),
    "q_drops_ns_24h_ms": ("<=", 500.0),
    "q_top_dest_1h_ms": ("<=", 500.0),
}
NAMESPACES = 20
PODS_PER_NAMESPACE = 25
NODE = "bench-node"
DAY_NS = 86_400 * 10**9


def _cluster() -> tuple[StaticMetadata, list[EndpointInfo]]:
    metadata = StaticMetadata()
    pods = []
    for n in range(NAMESPACES):
        for p in range(PODS_PER_NAMESPACE):
            index = n * PODS_PER_NAMESPACE + p
            pod = EndpointInfo(
                endpoint_id=100 + index,
                identity=1000 + index // 5,
                namespace=f"ns{n}",
                pod_name=f"app{p // 5}-{p:03d}-7f9c",
                labels=(f"k8s:app=app{p // 5}", f"k8s:io.kubernetes.pod.namespace=ns{n}"),
                ips=(str(ipaddress.IPv4Address(0x0A000000 + index + 1)),),
            )
            metadata.add_endpoint(pod)
            pods.append(pod)
    metadata.add_policy(1, PolicyInfo(name="allow-web", namespace="ns0", kind="NetworkPolicy"))
    metadata.add_policy(2, PolicyInfo(name="deny-db", namespace="ns0", kind="NetworkPolicy"))
    return metadata, pods


def _records(pods: list[EndpointInfo], count: int, seed: int, span_ns: int) -> Iterator[r.Record]:
    """Synthetic flow records, time_ns spread evenly over span_ns (boot clock from 1 s)."""
    rng = random.Random(seed)
    template = list(r.EVENT.unpack(r.pack()))
    packed = [ipaddress.IPv4Address(p.ips[0]).packed.ljust(16, b"\0") for p in pods]
    # A connection: (src, dst, dst port); a flow repeats it with its own source port.
    connections = [
        (rng.randrange(len(pods)), rng.randrange(len(pods)), rng.choice((80, 443, 5432, 53)))
        for _ in range(3000)
    ]
    step = max(1, span_ns // max(1, count))
    mac = bytes(6)
    for i in range(count):
        src, dst, port = connections[int(rng.paretovariate(1.2)) % len(connections)]
        dropped = rng.random() < 0.05
        rec = template[:]
        rec[r.TIME_NS] = 10**9 + i * step
        rec[r.BYTES] = 74
        rec[r.PACKETS] = 1
        rec[r.SRC_ADDR] = packed[src]
        rec[r.DST_ADDR] = packed[dst]
        rec[r.SRC_IDENTITY] = pods[src].identity
        rec[r.DST_IDENTITY] = pods[dst].identity
        rec[r.RULE_ID] = 2 if dropped else 1
        rec[r.ENDPOINT_ID] = pods[dst].endpoint_id
        rec[r.SRC_PORT] = 32768 + rng.randrange(28000)
        rec[r.DST_PORT] = port
        rec[r.PROTOCOL] = 6
        rec[r.TCP_FLAGS] = 0x02 if rng.random() < 0.3 else 0x10
        rec[r.IP_VERSION] = 1
        rec[r.EVENT_TYPE] = 1 if dropped else 5
        rec[r.VERDICT] = 2 if dropped else 1
        rec[r.DROP_REASON] = 133 if dropped else 0
        rec[r.DIRECTION] = 1
        rec[r.TRACE_POINT] = 101
        rec[r.MATCH_TYPE] = 2
        rec[r.SRC_MAC] = mac
        rec[r.DST_MAC] = mac
        yield tuple(rec)


def _ingest(
    directory: Path,
    pods: list[EndpointInfo],
    metadata: StaticMetadata,
    seconds: float,
    rate: float | None,
    history: bool,
) -> tuple[float, int]:
    """(flows/s until every flow offered is stored, flows lost) through FlowPipeline.process,
    offered at `rate` flows/s (None: as fast as the pipeline goes) for `seconds`."""
    decoder = FlowDecoder(metadata, DecoderConfig(node_name=NODE))
    ring = FlowRing(decoder, 4095)
    flows = int((rate or 600_000) * seconds)
    records = list(_records(pods, flows, 1, 10**9))
    batches = [
        b"".join(r.EVENT.pack(*rec) for rec in records[i : i + 4096]) for i in range(0, flows, 4096)
    ]
    store = writer = None
    if history:
        store = ChdbStore(directory)
        create_tables(store)
        writer = HistoryWriter(store, decoder, NODE, WriterConfig())
        writer.start()
    pipeline = FlowPipeline(FeedSource(), ring, history=writer)
    try:
        started = time.perf_counter()
        for index, batch in enumerate(batches):
            if rate is not None:  # paced, as the datapath delivers: batches on a clock
                due = started + index * 4096 / rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            pipeline.process(batch)
        if writer is not None:
            writer.flush(120)
        elapsed = time.perf_counter() - started
        lost = flows - writer.written if writer is not None else 0
        return flows / elapsed, lost
    finally:
        if writer is not None:
            writer.stop()
        if store is not None:
            store.close()


def _load(
    store: ChdbStore, pods: list[EndpointInfo], metadata: StaticMetadata, flows: int, now_ns: int
) -> float:
    """Write `flows` flows spread over the last 24 h; returns flows/s of the bulk load."""
    decoder = FlowDecoder(metadata, DecoderConfig(node_name=NODE))
    decoder.wall_offset_ns = now_ns - DAY_NS - 10**9  # boot-clock 1 s = 24 h ago
    writer = HistoryWriter(store, decoder, NODE)
    batch: list[r.Record] = []
    seq = 0
    started = time.perf_counter()
    for rec in _records(pods, flows, 2, DAY_NS - 10**9):
        batch.append(rec)
        if len(batch) == 262_144:
            writer.write_batch([_Flows(seq, batch)])
            seq += len(batch)
            batch = []
    if batch:
        writer.write_batch([_Flows(seq, batch)])
    return flows / (time.perf_counter() - started)


def _drain(messages: Iterator[bytes | CaughtUp | Paused]) -> int:
    count = 0
    for item in messages:
        if isinstance(item, bytes):
            count += 1
    return count


def _q_drops(
    store: ChdbStore, metadata: StaticMetadata, namespace: str, now_ns: int
) -> tuple[float, int]:
    decoder = FlowDecoder(metadata, DecoderConfig(node_name=NODE))
    ring = FlowRing(decoder, 4095)
    writer = HistoryWriter(store, decoder, NODE)
    reader = HistoryReader(store, writer)
    whitelist = (
        flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED], source_pod=[f"{namespace}/"]),
        flow_pb2.FlowFilter(verdict=[flow_pb2.DROPPED], destination_pod=[f"{namespace}/"]),
    )
    query = FlowQuery(
        number=0,
        first=False,
        follow=False,
        since_ns=now_ns - DAY_NS,
        until_ns=None,
        selection=FlowSelection(whitelist),
        whitelist=whitelist,
    )
    started = time.perf_counter()
    count = _drain(reader.stream(ring, query, NODE, 0))
    return (time.perf_counter() - started) * 1000, count


def _q_top_dest(store: ChdbStore, pod: EndpointInfo, now_ns: int) -> float:
    started = time.perf_counter()
    store.query(
        "SELECT dst_namespace, dst_pod, dst_ip, dst_port, sum(repeat) AS flows "
        f"FROM {store.database}.flows "
        "WHERE time >= fromUnixTimestamp64Nano({since:Int64}, 'UTC') "
        "AND src_namespace = {ns:String} AND src_pod = {pod:String} AND kind = 'flow' "
        "GROUP BY dst_namespace, dst_pod, dst_ip, dst_port ORDER BY flows DESC LIMIT 10",
        {"since": now_ns - 3600 * 10**9, "ns": pod.namespace, "pod": pod.pod_name},
        fmt="TSV",
    )
    return (time.perf_counter() - started) * 1000


def _shapes_bytes(store: ChdbStore) -> int:
    text = store.query(
        "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = {db:String} "
        "AND table = 'flow_shapes' AND active",
        {"db": store.database},
        fmt="TSV",
    )
    return int(text.decode().strip() or 0)


def run(flows: int, ingest_seconds: float) -> dict[str, Any]:
    metadata, pods = _cluster()
    work = Path(tempfile.mkdtemp(prefix="septum-bench-history-"))
    try:
        baseline, _ = _ingest(work / "none", pods, metadata, 1.0, None, history=False)
        unpaced, unpaced_lost = _ingest(work / "max", pods, metadata, 1.0, None, history=True)
        # The highest offered rate (steps of 25k/s from 100k/s) the store took without loss.
        ingest, lost = 0.0, 0
        for step, rate in enumerate(range(100_000, 300_001, 25_000)):
            achieved, step_lost = _ingest(
                work / f"paced{step}", pods, metadata, ingest_seconds, rate, history=True
            )
            if step_lost:
                lost = step_lost
                break
            ingest = achieved
        store = ChdbStore(work / "store")
        try:
            create_tables(store)
            now_ns = time.time_ns()
            load_per_s = _load(store, pods, metadata, flows, now_ns)
            store.execute(f"OPTIMIZE TABLE {store.database}.flows FINAL")
            size, rows = disk_usage(store)
            shapes = _shapes_bytes(store)
            _q_drops(store, metadata, "ns3", now_ns)  # first run: caches warm
            drops_ms, drops = min(_q_drops(store, metadata, "ns3", now_ns) for _ in range(3))
            pod = pods[3 * PODS_PER_NAMESPACE + 7]
            _q_top_dest(store, pod, now_ns)
            top_ms = min(_q_top_dest(store, pod, now_ns) for _ in range(3))
        finally:
            store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "ingest_per_s": round(ingest),
        "ingest_lost_at_next_step": lost,
        "unpaced_offer_per_s": round(unpaced),
        "unpaced_lost": unpaced_lost,
        "baseline_ring_only_ingest_per_s": round(baseline),
        "bulk_load_per_s": round(load_per_s),
        "bytes_per_flow": round((size + shapes) / max(1, rows), 2),
        "flows_table_bytes": size,
        "shapes_table_bytes": shapes,
        "stored_flows": rows,
        "q_drops_ns_24h_ms": round(drops_ms, 1),
        "q_drops_ns_24h_flows": drops,
        "q_top_dest_1h_ms": round(top_ms, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "flows": flows,
    }


@click.command("history")
@click.option(
    "--flows", default=10_000_000, show_default=True, help="Flows stored for the queries."
)
@click.option(
    "--ingest-seconds", default=2.0, show_default=True, help="Length of each paced ingest step."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
def command(flows: int, ingest_seconds: float, as_json: bool) -> None:
    """Flow history: ingest rate beside the ring, bytes per flow, query latency."""
    result = run(flows, ingest_seconds)
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        target = TARGETS.get(key)
        mark = f"  (target {target[0]} {target[1]:,.0f})" if target else ""
        click.echo(f"{key:34} {value}{mark}")
