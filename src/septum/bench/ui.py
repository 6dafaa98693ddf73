"""`septum bench ui`: the web UI in headless chromium (Debian's), against a real Observer.

An agent's Observer runs in this process (plaintext TCP on localhost) fed synthetic enriched
flows through a FeedSource; `septum ui` runs as its own process in front of it, as a user runs
it; Playwright drives /usr/bin/chromium (no browser of its own). Measured:

- first_flow_ms: from navigation start to the first flow row painted (the page's own mark,
  `window.__septum.firstFlowMs`), the Observer holding flows already; median of --repeat runs.
  Beside it, the bridge alone: the first GetFlows message through `septum ui`'s gRPC-Web
  bridge to a Python client (the floor under the page's figure).
- map_500_render_ms: navigation start to the service map laid out and painted with
  --workloads workloads (500) in --namespaces namespaces, two edges each (one inside its
  namespace, one to another): the page marks the first frame after which all of the layout's
  nodes and edges are in the page; median, and the slowest load beside it.
- follow_1k_fps_p5 / follow_1k_heap_mb: the flow table following --rate flows/s for
  --seconds (1,000/s for a minute): the 5th percentile of the per-frame rate (1000 / each
  requestAnimationFrame interval) and the JS heap in use at the end (CDP
  Performance.getMetrics JSHeapUsedSize). Beside them, the same page idle for 5 s (frame
  rate, heap), and paused under the same feed for up to 10 s: what the shared machine alone
  costs the frame rate, in the same run.
"""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from septum.dataplane.observe import record as r
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.metadata import EndpointInfo, StaticMetadata, Workload
from septum.dataplane.observe.node import NodeObserver, ObserveConfig
from septum.dataplane.observe.server import ListenConfig
from septum.dataplane.observe.sources import FeedSource
from septum.ui import grpcweb

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's chromium, headless, in a fresh profile removed afterwards: a Playwright
    BrowserContext (also what the UI tests drive)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        raise click.ClickException(f"{CHROMIUM}: missing; `make deps` installs Debian's chromium")
    profile = tempfile.mkdtemp(prefix="septum-chromium-")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                accept_downloads=True,
                viewport={"width": 1600, "height": 1000},
            )
            try:
                yield ctx
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


TARGETS = {
    "first_flow_ms": ("<=", 1000.0),
    "map_500_render_ms": ("<=", 2000.0),
    "follow_1k_fps_p5": (">=", 30.0),
    "follow_1k_heap_mb": ("<=", 300.0),
}

# Frame intervals, recorded in the page from the moment the script is evaluated.
_FRAME_PROBE = """() => {
  window.__frames = [];
  let last = performance.now();
  const tick = (t) => {
    window.__frames.push(t - last); last = t; window.__raf = requestAnimationFrame(tick);
  };
  window.__raf = requestAnimationFrame(tick);
}"""


@dataclass(frozen=True)
class Cluster:
    """The synthetic workloads: `count` pods in `namespaces` namespaces."""

    endpoints: tuple[EndpointInfo, ...]

    @staticmethod
    def make(count: int, namespaces: int) -> Cluster:
        eps = []
        for i in range(count):
            ns = f"ns-{i % namespaces:02d}"
            name = f"wl-{i:04d}"
            ip = str(ipaddress.ip_address("10.60.0.0") + 1 + i)
            eps.append(
                EndpointInfo(
                    1000 + i,
                    20000 + i,
                    ns,
                    f"{name}-7d9f8",
                    (f"k8s:app={name}",),
                    workloads=(Workload(name, "Deployment"),),
                    ips=(ip,),
                )
            )
        return Cluster(tuple(eps))

    def metadata(self) -> StaticMetadata:
        md = StaticMetadata()
        for ep in self.endpoints:
            md.add_endpoint(ep)
        return md

    def event(self, src: int, dst: int, port: int, sport: int) -> bytes:
        a, b = self.endpoints[src], self.endpoints[dst]
        dropped = (src + dst) % 7 == 0  # some red edges, as a real map has
        return r.pack(
            time_ns=time.clock_gettime_ns(time.CLOCK_BOOTTIME),
            bytes=74,
            packets=1,
            src_addr=ipaddress.ip_address(a.ips[0]).packed.ljust(16, b"\0"),
            dst_addr=ipaddress.ip_address(b.ips[0]).packed.ljust(16, b"\0"),
            src_identity=a.identity,
            dst_identity=b.identity,
            endpoint_id=b.endpoint_id,
            src_port=sport,
            dst_port=port,
            protocol=r.IPPROTO_TCP,
            tcp_flags=0x02,
            ip_version=r.IP_V4,
            event_type=r.EVENT_POLICY_VERDICT,
            verdict=r.VERDICT_DROPPED if dropped else r.VERDICT_FORWARDED,
            drop_reason=181 if dropped else 0,
            direction=r.DIR_INGRESS,
            trace_point=101,
            match_type=2,
        )

    def edge_events(self) -> list[bytes]:
        """Every workload talks to two others, one in its own namespace and one in another:
        2 x count edges."""
        n = len(self.endpoints)
        namespaces = len({ep.namespace for ep in self.endpoints})
        return [
            self.event(i, (i + step) % n, port, 30000 + i % 20000)
            for i in range(n)
            for step, port in ((namespaces, 80), (37, 8080))
        ]


@contextmanager
def observer(cluster: Cluster, capacity: int) -> Iterator[tuple[NodeObserver, FeedSource]]:
    feed = FeedSource()
    node = NodeObserver(
        ObserveConfig(
            node_name="bench-ui",
            listen=ListenConfig(tcp_address="127.0.0.1:0", plaintext_tcp=True),
            buffer_capacity=capacity,
        ),
        feed,
        cluster.metadata(),
    )
    node.start()
    try:
        yield node, feed
    finally:
        node.stop()


def _push_and_wait(node: NodeObserver, feed: FeedSource, events: list[bytes]) -> None:
    want = node.ring.head + len(events)
    for start in range(0, len(events), 512):
        feed.push(b"".join(events[start : start + 512]))
    deadline = time.monotonic() + 30
    while node.ring.head < want:
        if time.monotonic() > deadline:
            raise click.ClickException("the Observer's ring did not take the bench's events")
        time.sleep(0.01)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ui_server(server: str) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "septum"), "ui", "--server", server]
        + ["--address", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise click.ClickException("septum ui did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bridge_first_flow_ms(url: str) -> float:
    """The first GetFlows message through the bridge, read by a Python client."""
    body = grpcweb.message_frame(observer_pb2.GetFlowsRequest(number=1000).SerializeToString())
    req = urllib.request.Request(
        url + "/observer.Observer/GetFlows",
        data=body,
        headers={"Content-Type": grpcweb.RESPONSE_CONTENT_TYPE},
        method="POST",
    )
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read(5)
        return (time.perf_counter() - start) * 1000


def _mark(page: Any, name: str, timeout_s: float, extra: str = "true") -> float:
    page.wait_for_function(
        f"() => window.__septum && window.__septum.{name} !== undefined && ({extra})",
        timeout=timeout_s * 1000,
    )
    return float(page.evaluate(f"() => window.__septum.{name}"))


def _heap_mb(page: Any) -> float:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    cdp.detach()
    return float(metrics["JSHeapUsedSize"]) / 2**20


def _fps_p5(intervals_ms: list[float]) -> float:
    rates = sorted(1000.0 / dt for dt in intervals_ms if dt > 0)
    return rates[max(0, int(len(rates) * 0.05) - 1)] if rates else 0.0


def _feed_at(feed: FeedSource, cluster: Cluster, rate: int, seconds: float) -> int:
    """`rate` flows a second in 10 ms ticks; returns how many were fed."""
    per_tick = max(1, rate // 100)
    n = len(cluster.endpoints)
    sent = 0
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        batch = [
            cluster.event((sent + k) % n, (sent + k + 1) % n, 80, 1024 + (sent + k) % 60000)
            for k in range(per_tick)
        ]
        feed.push(b"".join(batch))
        sent += per_tick
        tick += 1
        delay = start + tick * 0.01 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return sent


def run(workloads: int, namespaces: int, rate: int, seconds: float, repeat: int) -> dict[str, Any]:
    cluster = Cluster.make(workloads, namespaces)
    result: dict[str, Any] = {}
    with observer(cluster, capacity=65535) as (node, feed):
        _push_and_wait(node, feed, cluster.edge_events())
        with ui_server(f"127.0.0.1:{node.tcp_port}") as url:
            bridge = [bridge_first_flow_ms(url) for _ in range(repeat)]
            with chromium() as ctx:
                first, maps = [], []
                for _ in range(repeat):
                    page = ctx.new_page()
                    page.goto(url + "/#/flows")
                    first.append(_mark(page, "firstFlowMs", 30))
                    page.close()
                    page = ctx.new_page()
                    page.goto(url + "/#/map")
                    maps.append(
                        _mark(
                            page,
                            "mapRenderedMs",
                            60,
                            f"window.__septum.mapNodes >= {workloads} && "
                            f"window.__septum.mapEdges >= {2 * workloads}",
                        )
                    )
                    page.close()
                page = ctx.new_page()
                page.goto(url + "/#/flows")
                _mark(page, "firstFlowMs", 30)
                page.evaluate(_FRAME_PROBE)
                time.sleep(5)
                idle = page.evaluate("() => window.__frames.splice(0)")
                idle_heap = _heap_mb(page)
                fed = _feed_at(feed, cluster, rate, seconds)
                busy = page.evaluate("() => window.__frames.splice(0)")
                heap = _heap_mb(page)
                shown = page.get_by_test_id("flow-count").inner_text()
                # The machine's share in the frame rate: the same feed, the same processes,
                # the page paused (it takes no flows), for up to 10 s.
                page.get_by_test_id("pause").click()
                page.evaluate("() => window.__frames.splice(0)")
                _feed_at(feed, cluster, rate, min(seconds, 10.0))
                paused = page.evaluate("() => window.__frames.splice(0)")
                page.close()
    result.update(
        first_flow_ms=round(statistics.median(first), 1),
        map_500_render_ms=round(statistics.median(maps), 1),
        map_500_render_max_ms=round(max(maps), 1),
        follow_1k_fps_p5=round(_fps_p5(busy), 1),
        follow_1k_heap_mb=round(heap, 1),
        bridge_first_message_ms=round(statistics.median(bridge), 1),
        idle_fps_p5=round(_fps_p5(idle), 1),
        paused_while_feeding_fps_p5=round(_fps_p5(paused), 1),
        idle_heap_mb=round(idle_heap, 1),
        follow_fps_median=round(1000.0 / statistics.median(busy), 1) if busy else 0.0,
        follow_frames=len(busy),
        flows_fed=fed,
        flows_fed_per_s=round(fed / seconds, 1),
        table_after=shown,
        workloads=workloads,
        namespaces=namespaces,
        edges=2 * workloads,
        seconds=seconds,
        runs=repeat,
        first_flow_runs_ms=[round(x, 1) for x in first],
        map_runs_ms=[round(x, 1) for x in maps],
        machine=f"{platform.machine()}, {os.cpu_count()} cores (shared), {platform.release()}",
        chromium=_chromium_version(),
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )
    result["targets_met"] = {
        key: (result[key] <= limit if op == "<=" else result[key] >= limit)
        for key, (op, limit) in TARGETS.items()
    }
    return result


def _chromium_version() -> str:
    out = subprocess.run(
        [str(CHROMIUM), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    return out.stdout.strip()


@click.command(name="ui")
@click.option("--workloads", type=click.IntRange(2, 5000), default=500, show_default=True)
@click.option("--namespaces", type=click.IntRange(1, 500), default=20, show_default=True)
@click.option(
    "--rate",
    type=click.IntRange(100, 20000),
    default=1000,
    show_default=True,
    help="Flows per second while following.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(1, 600),
    default=60.0,
    show_default=True,
    help="How long to follow.",
)
@click.option(
    "--repeat",
    type=click.IntRange(1, 20),
    default=5,
    show_default=True,
    help="Runs of the first-flow and map timings (the median is reported).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
def command(
    workloads: int, namespaces: int, rate: int, seconds: float, repeat: int, as_json: bool
) -> None:
    """Time to first flow, to a rendered 500-workload map, and frame rate and heap while
    following 1,000 flows/s, in headless chromium."""
    result = run(workloads, namespaces, rate, seconds, repeat)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"septum bench ui — {result['machine']}, {result['date']}")
    for col in ("figure", "value", "target", "met", "beside it (same run)"):
        table.add_column(col)
    beside = {
        "first_flow_ms": f"bridge alone {result['bridge_first_message_ms']} ms",
        "map_500_render_ms": f"slowest of {repeat} {result['map_500_render_max_ms']} ms; "
        f"{workloads} workloads, {2 * workloads} edges, {namespaces} ns",
        "follow_1k_fps_p5": f"idle page p5 {result['idle_fps_p5']}, paused page under the same "
        f"feed p5 {result['paused_while_feeding_fps_p5']}; median {result['follow_fps_median']}",
        "follow_1k_heap_mb": f"idle page {result['idle_heap_mb']} MB; "
        f"{result['flows_fed_per_s']} flows/s fed for {seconds:g} s",
    }
    for key, (op, limit) in TARGETS.items():
        table.add_row(
            key, str(result[key]), f"{op} {limit:g}", str(result["targets_met"][key]), beside[key]
        )
    Console().print(table)
