"""`septum bench relay`: flows per second through the relay to one follower, and what was lost.

Two agents' Observers (in this process, plaintext TCP on localhost) are fed synthetic enriched
flows with fresh timestamps at `--rate-per-agent` each; `septum relay` runs as its own process
(listening on a unix socket) and one following client in a third process reads it:

- `python`: a Python grpcio client reading raw messages (its own ceiling is ~20-25k/s here);
- `hubble`: the real `hubble observe -f -o json` (grpc-go), its output read by a small counter.

Each row counts, after a one-second warm-up, the flows the client received per second and the
events reported lost to it (LostEvent messages: an agent's follower that the relay did not keep
up with is overrun and the agent counts it), beside the losses the agents' rings counted
meanwhile, so nothing lost goes unseen.

`--compare-servers` adds the measurement behind the relay's design: one agent's ring streamed to
`hubble observe -f -o compact` by the agents' HTTP/2 front, and by a grpclib server sending the
same pre-serialized messages through grpclib's public API (one message per send), on the same
feed as `septum bench flows` (100,000 flows/s offered).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from septum.bench import flows as flow_bench

CLIENTS = ("python", "hubble")
WARM_UP_S = 1.0
_TICK_S = 0.01
_TIME = struct.Struct("<Q")

# Both clients follow from the time they start (`since`), print the flows per second received
# after the warm-up for `seconds`, then read on until the stream has been idle for IDLE_S (the
# bench stops the agents' feeds when the first line comes) and print the totals: flows
# received and events reported lost over the whole call. Messages are counted by their first
# field (no parse, except the rare LostEvent).
IDLE_S = 1.5

_PYTHON_CLIENT = r"""
import os, sys, threading, time
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc
from septum.dataplane.observe.api.observer import observer_pb2
target, seconds, warm_up, idle_s = sys.argv[1], *map(float, sys.argv[2:5])
request = observer_pb2.GetFlowsRequest(follow=True)
request.since.FromNanoseconds(time.time_ns())
call = grpc.insecure_channel(target).unary_stream(
    "/observer.Observer/GetFlows",
    request_serializer=observer_pb2.GetFlowsRequest.SerializeToString,
    response_deserializer=None,
)(request)
flows = lost = measured = 0
start = None
last_message = time.monotonic()
def watchdog():
    while time.monotonic() - last_message < idle_s:
        time.sleep(0.1)
    call.cancel()
threading.Thread(target=watchdog, daemon=True).start()
try:
    for message in call:
        now = time.perf_counter()
        last_message = time.monotonic()
        if start is None:
            start = now + warm_up
        if message[:1] == b"\x0a":
            flows += 1
            if start <= now:
                measured += 1
        elif message[:1] == b"\x1a":
            lost += observer_pb2.GetFlowsResponse.FromString(message).lost_events.num_events_lost
        if start is not None and now - start >= seconds and measured >= 0:
            print(measured / (now - start), flush=True)
            measured = -(1 << 62)  # printed once
except grpc.RpcError:
    pass  # cancelled by the watchdog once idle
print(flows, lost, flush=True)
"""

_HUBBLE_CLIENT = r"""
import datetime, json, os, subprocess, sys, time
hubble, target, seconds, warm_up, idle_s, home = sys.argv[1:7]
seconds, warm_up, idle_s = float(seconds), float(warm_up), float(idle_s)
since = datetime.datetime.now(datetime.timezone.utc).isoformat()
proc = subprocess.Popen(
    [hubble, "observe", "-f", "-o", "json", "--since", since, "--server", target],
    stdout=subprocess.PIPE, env={**os.environ, "HOME": home},
)
os.set_blocking(proc.stdout.fileno(), False)
fd = proc.stdout.fileno()
flows = lost = measured = 0
start = None
carry = b""
printed = False
last_data = time.monotonic()
try:
    while time.monotonic() - last_data < idle_s:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not chunk:
            sys.exit("hubble observe ended early (exit %s)" % proc.wait())
        last_data = time.monotonic()
        now = time.perf_counter()
        if start is None:
            start = now + warm_up
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        for line in lines:
            if line.startswith(b'{"flow"'):
                flows += 1
                measured += start <= now
            elif b'"lost_events"' in line:
                lost += int(json.loads(line)["lost_events"].get("num_events_lost", 0))
        if not printed and now - start >= seconds:
            print(measured / (now - start), flush=True)
            printed = True
finally:
    proc.kill()
    proc.wait()
print(flows, lost, flush=True)
"""


class _Agent:
    """One in-process agent Observer fed at a fixed rate with fresh-timestamped flows."""

    def __init__(self, name: str, rate_per_s: int) -> None:
        from septum.dataplane.observe.node import NodeObserver, ObserveConfig
        from septum.dataplane.observe.server import ListenConfig
        from septum.dataplane.observe.sources import FeedSource

        self.feed = FeedSource()
        self.node = NodeObserver(
            ObserveConfig(
                node_name=name,
                listen=ListenConfig(tcp_address="127.0.0.1:0", plaintext_tcp=True),
            ),
            self.feed,
            flow_bench._metadata(),
        )
        self.per_tick = max(1, rate_per_s // int(1 / _TICK_S))
        template = flow_bench._synthetic_batch(self.per_tick)
        size = len(template) // self.per_tick
        # Each record without its leading time: a tick writes fresh times in front.
        self._tails = [template[i * size + 8 : (i + 1) * size] for i in range(self.per_tick)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._offer, name=f"feed-{name}", daemon=True)
        self.offered = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.node.tcp_port}"

    def lost(self) -> int:
        return sum(self.node.ring.lost_by_source.values())

    def _offer(self) -> None:
        pack, tails = _TIME.pack, self._tails
        next_tick = time.perf_counter()
        while not self._stop.is_set():
            now = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
            self.feed.push(b"".join(pack(now + i) + tail for i, tail in enumerate(tails)))
            self.offered += len(tails)
            next_tick += _TICK_S
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    def start(self) -> None:
        self.node.start()
        self._thread.start()

    def pause(self) -> None:
        """Stop producing (the Observer keeps serving)."""
        self._stop.set()
        self._thread.join(5)

    def stop(self) -> None:
        self.pause()
        self.node.stop()


@contextmanager
def _relay_process(addresses: list[str], socket: Path) -> Iterator[subprocess.Popen[str]]:
    argv = [
        sys.executable,
        "-c",
        "from septum.cli.main import main; main()",
        "relay",
        "--listen-address",
        f"unix://{socket}",
        "--insecure-agents",
        "--log-level",
        "WARNING",
    ]
    for address in addresses:
        argv += ["--agent", address]
    env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false"}
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        _wait_connected(process, socket, len(addresses))
        yield process
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def _wait_connected(process: subprocess.Popen[str], socket: Path, nodes: int) -> None:
    """Until the relay answers GetNodes with every agent connected (or fail with its state)."""
    import grpc

    from septum.dataplane.observe.api.observer import observer_pb2, observer_pb2_grpc

    deadline = time.monotonic() + 20
    last: object = "no socket yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"septum relay exited: {process.communicate()[1][-500:]}")
        if socket.exists():
            with grpc.insecure_channel(f"unix://{socket}") as channel:
                stub = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
                try:
                    reply = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=5)
                except grpc.RpcError as err:
                    last = err.code()
                else:
                    last = [(n.name, n.state) for n in reply.nodes]
                    if sum(n.state == 1 for n in reply.nodes) == nodes:
                        return
        time.sleep(0.1)
    raise click.ClickException(f"septum relay: agents not connected after 20 s: {last}")


def _cpu_s(pid: int) -> float:
    import psutil  # type: ignore[import-untyped]

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _through_relay(
    client: str, seconds: float, rate_per_agent: int, folder: Path
) -> dict[str, float]:
    agents = [_Agent(f"bench-node-{i}", rate_per_agent) for i in (1, 2)]
    for agent in agents:
        agent.start()
    socket = folder / f"relay-{client}.sock"
    try:
        with _relay_process([a.address for a in agents], socket) as relay:
            target = f"unix://{socket}"
            if client == "hubble":
                argv = [
                    sys.executable,
                    "-c",
                    _HUBBLE_CLIENT,
                    flow_bench._hubble_binary(),
                    target,
                    str(seconds),
                    str(WARM_UP_S),
                    str(IDLE_S),
                    str(folder),
                ]
            else:
                argv = [sys.executable, "-c", _PYTHON_CLIENT, target]
                argv += [str(seconds), str(WARM_UP_S), str(IDLE_S)]
            lost_before = sum(a.lost() for a in agents)
            offered_before = sum(a.offered for a in agents)
            cpu_before, started = _cpu_s(relay.pid), time.perf_counter()
            rate, totals = _run_client(argv, seconds, lambda: _pause(agents))
            elapsed = time.perf_counter() - started
            relay_cpu = _cpu_s(relay.pid) - cpu_before
            offered = sum(a.offered for a in agents) - offered_before
            agents_lost = sum(a.lost() for a in agents) - lost_before
    finally:
        for agent in agents:
            agent.stop()
    delivered, lost = totals
    return {
        "offered_per_s": 2 * agents[0].per_tick * int(1 / _TICK_S),
        "delivered_per_s": round(rate),
        "offered": offered,
        "delivered": delivered,
        "lost_reported": lost,
        "lost_counted_by_agents": agents_lost,
        # Flows offered while the client followed that it neither received nor was told were
        # lost (the client starts following a moment after the count starts: a tick or two).
        "unaccounted": offered - delivered - lost,
        "relay_cpu_pct": round(100 * relay_cpu / elapsed, 1),
    }


def _pause(agents: list[_Agent]) -> None:
    for agent in agents:
        agent.pause()


def _run_client(
    argv: list[str], seconds: float, stop_feeds: Callable[[], None]
) -> tuple[float, tuple[int, int]]:
    """Run a client: its first line is the measured rate (the feeds stop then), its second the
    totals once the stream went idle."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        stop_feeds()
        out, err = process.communicate(timeout=seconds + 60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    if process.returncode != 0 or not first.strip():
        raise click.ClickException(f"follower failed: {err.strip()[-500:]}")
    flows, lost = out.split()
    return float(first), (int(flows), int(lost))


def _grpclib_stream(seconds: float, folder: Path) -> float:
    """One agent's ring streamed by a grpclib server (public API: one message per send) to
    `hubble observe -f -o compact`, fed as `septum bench flows` feeds the front."""
    import grpclib.const
    import grpclib.server

    from septum.dataplane.observe.api.observer import observer_pb2
    from septum.dataplane.observe.query import CaughtUp, FlowQuery, Paused, stream_flows
    from septum.dataplane.observe.service import HUBBLE_API_VERSION, SERVER_VERSION_HEADER
    from septum.dataplane.observe.sources import FeedSource
    from septum.relay.codec import PassthroughCodec

    feed = FeedSource()
    node = flow_bench._observer(feed, folder)
    ring = node.ring
    node.pipeline.start()

    async def get_flows(stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert isinstance(request, observer_pb2.GetFlowsRequest)
        query = FlowQuery.from_request(request)
        await stream.send_initial_metadata(metadata={SERVER_VERSION_HEADER: HUBBLE_API_VERSION})
        loop = asyncio.get_running_loop()
        for item in stream_flows(ring, query, "sfl-bench", pause_every=256):
            if isinstance(item, CaughtUp):
                more = asyncio.Event()
                token = ring.add_listener(lambda more=more: loop.call_soon_threadsafe(more.set))
                try:
                    if ring.head <= int(item):
                        await more.wait()
                finally:
                    ring.remove_listener(token)
            elif isinstance(item, Paused):
                await asyncio.sleep(0)
            else:
                await stream.send_message(item)

    class Service:
        def __mapping__(self) -> dict[str, grpclib.const.Handler]:
            return {
                "/observer.Observer/GetFlows": grpclib.const.Handler(
                    get_flows,
                    grpclib.const.Cardinality.UNARY_STREAM,
                    observer_pb2.GetFlowsRequest,
                    bytes,
                )
            }

    socket = folder / "grpclib.sock"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpclib-bench", daemon=True)
    thread.start()

    async def serve() -> grpclib.server.Server:
        server = grpclib.server.Server([Service()], codec=PassthroughCodec())
        await server.start(path=str(socket))
        return server

    async def close(server: grpclib.server.Server) -> None:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)

    server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
    stop = threading.Event()
    batch = flow_bench._synthetic_batch(flow_bench.STREAM_OFFER_PER_TICK)

    def offer() -> None:
        while not stop.is_set():
            feed.push(batch)
            time.sleep(_TICK_S)

    feeder = threading.Thread(target=offer, daemon=True)
    feeder.start()
    try:
        argv = [
            sys.executable,
            "-c",
            flow_bench._HUBBLE_CLIENT,
            flow_bench._hubble_binary(),
            f"unix://{socket}",
            str(seconds),
            str(folder),
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        if out.returncode != 0:
            raise click.ClickException(f"hubble against grpclib failed: {out.stderr[-500:]}")
        return float(out.stdout.split()[0])
    finally:
        stop.set()
        feeder.join(5)
        ring.close()
        try:
            asyncio.run_coroutine_threadsafe(close(server), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()
            node.pipeline.stop()


def run(
    seconds: float, rate_per_agent: int, clients: tuple[str, ...], compare_servers: bool
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="srl-", dir="/tmp") as tmp:
        folder = Path(tmp)
        for client in clients:
            results[client] = _through_relay(client, seconds, rate_per_agent, folder)
        if compare_servers:
            front_dir = folder / "front"
            front_dir.mkdir()
            results["front_hubble_flows_per_s"] = round(
                flow_bench._stream(seconds, front_dir, "hubble")
            )
            grpclib_dir = folder / "grpclib"
            grpclib_dir.mkdir()
            results["grpclib_hubble_flows_per_s"] = round(_grpclib_stream(seconds, grpclib_dir))
    return results


def _print_table(results: dict[str, Any], seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"septum bench relay ({platform.node()}, {os.cpu_count()} cores; "
        f"2 agents -> relay -> 1 follower, {seconds:g} s after {WARM_UP_S:g} s warm-up)"
    )
    for column in (
        "follower",
        "offered/s",
        "delivered/s",
        "lost (reported)",
        "lost (agents)",
        "unaccounted",
        "relay CPU (whole call)",
    ):
        table.add_column(column, justify="right")
    for client in CLIENTS:
        row = results.get(client)
        if row is None:
            continue
        table.add_row(
            client,
            f"{row['offered_per_s']:,}",
            f"{row['delivered_per_s']:,}",
            f"{row['lost_reported']:,}",
            f"{row['lost_counted_by_agents']:,}",
            f"{row['unaccounted']:,} of {row['offered']:,}",
            f"{row['relay_cpu_pct']}%",
        )
    console = Console()
    console.print(table)
    if "front_hubble_flows_per_s" in results:
        console.print(
            "one ring -> hubble -o compact: HTTP/2 front "
            f"{results['front_hubble_flows_per_s']:,} flows/s, grpclib "
            f"{results['grpclib_hubble_flows_per_s']:,} flows/s"
        )


@click.command("relay")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--seconds", type=float, default=4.0, show_default=True, help="Measured time.")
@click.option(
    "--rate-per-agent",
    type=click.IntRange(min=100),
    default=50_000,
    show_default=True,
    help="Flows per second each agent produces.",
)
@click.option(
    "--client",
    "clients",
    type=click.Choice(CLIENTS),
    multiple=True,
    default=CLIENTS,
    show_default=True,
    help="Following client(s): Python grpcio, the real hubble CLI (-o json).",
)
@click.option(
    "--compare-servers",
    is_flag=True,
    help="Also stream one ring to hubble from the agents' HTTP/2 front and from grpclib.",
)
def command(
    as_json: bool,
    seconds: float,
    rate_per_agent: int,
    clients: tuple[str, ...],
    compare_servers: bool,
) -> None:
    """The relay: flows/s to one follower with two agents producing, losses, relay CPU."""
    results = run(seconds, rate_per_agent, clients, compare_servers)
    if as_json:
        click.echo(json.dumps(results))
        return
    _print_table(results, seconds)
