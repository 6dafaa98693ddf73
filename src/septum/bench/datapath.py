"""`septum bench datapath`: the datapath's cost per packet, and throughput against iptables.

1. BPF_PROG_TEST_RUN, 1,000,000 repeats per path, with 10,000 ipcache prefixes and 10,000
   policy entries loaded: an empty tc program (the baseline, same run), the established
   (conntrack hit) path, the new-connection allow path (conntrack insert and event
   included) and the deny path; beside them (table only) the floor of the new-connection
   path, `bench_new_floor`: the map operations and event it cannot skip, and nothing else.
2. Two pods (namespaces) and interleaved rounds of iperf3: nothing attached, Septum
   attached with the 10,000-entry policy, and the same policy enforced the way iptables
   based enforcers do it (an ipset of 10,000 peer/port pairs, conntrack accept, in the
   node's own namespace); the ratios are the median of the per-round ratios.
3. New connections per second with Septum and with iptables+ipset: interleaved 1 s runs
   (10 pairs by default), the agent's own flow ingest reading Septum's events during its
   runs (iptables has no events); the ratio is the median of the per-round ratios.
4. live_ns_per_packet: the kernel's own BPF run-time statistics of the attached programs
   during one Septum round (kernel.bpf_stats_enabled is switched on only for it).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import secrets
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from septum.bench import connaccount, peercompare
from septum.bench.agentingest import agent_ingest_process
from septum.bench.bpfstats import BPF_STATS, measure_live
from septum.bench.population import (
    ENTRIES,
    allowed_packet,
    denied_packet,
    peer_ipv4,
    policy_entries,
    prefixes,
)
from septum.bench.septumside import loaded_node
from septum.dataplane import abi, netns
from septum.dataplane.cleanup import cleanup_step
from septum.dataplane.config import DatapathConfig, kernel_config
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.netns import CLONE_NEWNET, NETNS_RUN_DIR
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Pod, Sandbox, open_socket

# iperf3 orders, one per round in turn: each kind runs first, second and third equally often
ORDERS = (
    ("plain", "septum", "iptables"),
    ("septum", "iptables", "plain"),
    ("iptables", "plain", "septum"),
)
CHUNKS = 5
SERVER_PORT = 5201
CONN_PORT = 8080
EGRESS = abi.TrafficDirection.EGRESS
INGRESS = abi.TrafficDirection.INGRESS
CONNRATE = Path(__file__).resolve().parents[3] / "build" / "tools" / "connrate"


# ---- 1. BPF_PROG_TEST_RUN --------------------------------------------------------------


def _drain(node: NodeDatapath) -> None:
    reader = node.flow_reader()
    while reader.read_raw(1 << 20):
        pass


def _new_connections(
    node: NodeDatapath,
    packet: bytes,
    repeats: int,
    flag: int,
    baselines: list[float],
    program: str = abi.PROG_FROM_POD,
) -> float:
    """Mean ns per new connection; run in chunks the 16 MiB ring holds, drained between, so
    every event is really submitted (none lost).  A baseline chunk runs before each.  The
    node's own configuration (local delivery on, as the agent runs) plus `flag`."""
    config = kernel_config(node.config)
    config.flags |= flag
    node.write_config(config)
    chunk = min(repeats // CHUNKS or 1, 100_000)
    durations = []
    done = 0
    _drain(node)
    while done < repeats:
        baselines.append(
            float(node.test_run(abi.PROG_BENCH_EMPTY, packet, repeat=chunk, ifindex=1).duration_ns)
        )
        durations.append(float(node.test_run(program, packet, repeat=chunk, ifindex=1).duration_ns))
        done += chunk
        _drain(node)
    return statistics.median(durations)


def microbench(repeats: int) -> dict[str, float]:
    if BPF_STATS.read_text().strip() != "0":
        raise click.ClickException(
            "kernel.bpf_stats_enabled is on: every test run would include its clock reads; "
            "switch it off (sysctl kernel.bpf_stats_enabled=0) and run again"
        )
    # a 16 MiB ring: the forced-new runs below submit an event per repeat, drained per chunk
    with loaded_node(ringbuf_bytes=1 << 24) as node:
        allowed, denied = allowed_packet(), denied_packet()

        baselines: list[float] = []

        def run(program: str, packet: bytes) -> float:
            # 5 chunks of repeats/5, median of their per-run averages: one burst of
            # another tenant on this shared machine must not move the figure.  Each chunk
            # is paired with a baseline chunk run just before it, so the baseline is
            # measured under the same load as every path it divides.
            chunk = max(repeats // CHUNKS, 1)
            durations = []
            for _ in range(CHUNKS):
                baselines.append(
                    float(
                        node.test_run(
                            abi.PROG_BENCH_EMPTY, packet, repeat=chunk, ifindex=1
                        ).duration_ns
                    )
                )
                durations.append(
                    float(node.test_run(program, packet, repeat=chunk, ifindex=1).duration_ns)
                )
            return statistics.median(durations)

        results: dict[str, float] = {}
        node.test_run(abi.PROG_FROM_POD, allowed, ifindex=1)  # creates the conntrack entry
        results["established_ns"] = run(abi.PROG_FROM_POD, allowed)
        results["deny_ns"] = run(abi.PROG_FROM_POD, denied)
        # new connections, hot: every repeat ignores its conntrack hit and takes the
        # new-connection path (policy, conntrack insert, event) on warm caches
        results["new_allow_ns"] = _new_connections(
            node, allowed, repeats, abi.CFG_F_BENCH_FORCE_NEW, baselines
        )
        # new connections, cold: a fresh random tuple every repeat, so every conntrack
        # lookup and insert lands on a cold slot and the LRU evicts once full
        results["new_allow_cold_ns"] = _new_connections(
            node, allowed, repeats, abi.CFG_F_BENCH_NEW_FLOWS, baselines
        )
        # the floor: the same new connection with nothing but the map operations and the
        # event it cannot skip (bench_new_floor), with the same conntrack replace per repeat
        results["new_allow_floor_ns"] = _new_connections(
            node, allowed, repeats, 0, baselines, program=abi.PROG_BENCH_NEW_FLOOR
        )
        results["new_allow_lost_events"] = float(node.lost_events())
        results["baseline_ns"] = statistics.median(baselines)
        return results


# ---- 2./3. throughput and connection rate ----------------------------------------------


def _in_netns(ns: str) -> Any:
    def enter() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(NETNS_RUN_DIR / ns, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    return enter


def _run(ns: str, argv: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_in_netns(ns),  # noqa: PLW1509 - single-threaded at this point
    )
    if done.returncode:
        raise click.ClickException(f"{' '.join(argv)} in netns {ns}: {done.stderr.strip()}")
    return done.stdout


@contextmanager
def _iperf_server(pod: Pod) -> Iterator[None]:
    server = subprocess.Popen(
        ["iperf3", "-s", "-B", pod.ipv4, "-p", str(SERVER_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_in_netns(pod.name),  # noqa: PLW1509
    )
    try:
        yield
    finally:
        server.terminate()
        server.wait(timeout=10)


def _iperf_gbps(client: Pod, server: Pod, seconds: int) -> float:
    """One iperf3 run; retried while the server is still starting or finishing a run."""
    deadline = time.monotonic() + 15
    last = ""
    while time.monotonic() < deadline:
        argv = ["iperf3", "-c", server.ipv4, "-p", str(SERVER_PORT), "-t", str(seconds), "-J"]
        try:
            report = json.loads(_run(client.name, argv))
        except (click.ClickException, json.JSONDecodeError) as err:
            last = str(err)
            continue
        received = report.get("end", {}).get("sum_received", {}).get("bits_per_second")
        if received:
            return float(received) / 1e9
        last = str(report.get("error", report))[:200]
    raise click.ClickException(f"iperf3 from {client.name} kept failing: {last}")


def _connections(client: Pod, server: Pod, seconds: float) -> tuple[int, float]:
    """(connections completed, seconds taken) by tools/connrate in the client pod: one
    connection after another, each closed with RST so no client port lingers in TIME_WAIT
    and the next measurement starts from the same state.  C, not a Python loop: the
    interpreter's ~100 us per connection would hide the microseconds an enforcer adds."""
    if not CONNRATE.is_file():
        raise click.ClickException(f"{CONNRATE} is not built: run `make tools`")
    out = _run(client.name, [str(CONNRATE), server.ipv4, str(CONN_PORT), str(seconds)])
    count, elapsed = out.split()
    return int(count), float(elapsed)


class _Accepter:
    """A server that accepts and closes connections (for the connection-rate test)."""

    def __init__(self, pod: Pod) -> None:
        self.sock = open_socket(pod.name, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((pod.ipv4, CONN_PORT))
        self.sock.listen(4096)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.close()
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


@dataclass
class _Enforcers:
    sandbox: Sandbox
    node: NodeDatapath
    client: Pod
    server: Pod

    def septum_on(self) -> None:
        self.node.upsert_endpoint(
            EndpointSpec(1, self.client.host_interface, 7001, self.client.ipv4)
        )
        self.node.upsert_endpoint(
            EndpointSpec(2, self.server.host_interface, 7002, self.server.ipv4)
        )
        allow = (
            PolicyEntry(INGRESS, 7001, 6, SERVER_PORT, rule_id=90_001),
            PolicyEntry(INGRESS, 7001, 6, CONN_PORT, rule_id=90_002),
        )
        self.node.replace_policy(
            2, EndpointPolicy(enforce_ingress=True, entries=policy_entries(INGRESS, allow))
        )

    def septum_off(self) -> None:
        for endpoint_id in self.node.endpoint_ids():
            self.node.remove_endpoint(endpoint_id)

    def iptables_setup(self) -> None:
        members = [f"add sdp-allow {peer_ipv4(i)},tcp:{1 + i % 1000}" for i in range(ENTRIES - 2)]
        members += [
            f"add sdp-allow {self.client.ipv4},tcp:{SERVER_PORT}",
            f"add sdp-allow {self.client.ipv4},tcp:{CONN_PORT}",
        ]
        script = "create sdp-allow hash:ip,port maxelem 65536\n" + "\n".join(members) + "\n"
        _run(self.sandbox.node_ns, ["ipset", "restore"], script)

    def iptables_on(self) -> None:
        veth = self.server.host_interface
        rules = (
            "*filter\n"
            ":FORWARD ACCEPT [0:0]\n"
            ":SDP-POD - [0:0]\n"
            f"-A FORWARD -o {veth} -j SDP-POD\n"
            "-A SDP-POD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
            "-A SDP-POD -m set --match-set sdp-allow src,dst -j ACCEPT\n"
            "-A SDP-POD -j DROP\n"
            "COMMIT\n"
        )
        _run(self.sandbox.node_ns, ["iptables-restore"], rules)

    def iptables_off(self) -> None:
        _run(self.sandbox.node_ns, ["iptables-restore"], "*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")


def throughput(rounds: int, seconds: int, conn_rounds: int = 12) -> dict[str, float]:
    prefix = f"sdpb{secrets.token_hex(2)}"
    sandbox = Sandbox(prefix)
    node: NodeDatapath | None = None
    accepter: _Accepter | None = None
    try:
        client = sandbox.add_pod("c", "10.198.0.1")
        server = sandbox.add_pod("s", "10.198.0.2")
        for pod in (client, server):
            # no TCP metrics carried from one iperf3 connection to the next: each run
            # starts from the same congestion state whichever enforcer ran before it
            with netns.entered(pod.name):
                Path("/proc/sys/net/ipv4/tcp_no_metrics_save").write_text("1")
        node = NodeDatapath(DatapathConfig(node_name=f"bench-{prefix}", netns=sandbox.node_ns))
        node.upsert_prefixes({**prefixes(), "10.198.0.1/32": 7001, "10.198.0.2/32": 7002})
        enforcers = _Enforcers(sandbox, node, client, server)
        enforcers.iptables_setup()
        accepter = _Accepter(server)
        runs: dict[str, list[float]] = {"plain": [], "septum": [], "iptables": []}
        live = (0, 0)

        def measure(kind: str, first_septum: bool) -> None:
            if kind == "septum":
                enforcers.septum_on()
                if first_septum:
                    nonlocal live
                    live = measure_live(
                        node, lambda: runs[kind].append(_iperf_gbps(client, server, seconds))
                    )
                else:
                    runs[kind].append(_iperf_gbps(client, server, seconds))
                enforcers.septum_off()
            elif kind == "iptables":
                enforcers.iptables_on()
                runs[kind].append(_iperf_gbps(client, server, seconds))
                enforcers.iptables_off()
            else:
                runs[kind].append(_iperf_gbps(client, server, seconds))

        with _iperf_server(server):
            for round_index in range(rounds):
                # the order rotates every round, so no enforcer always runs first or
                # right after another one
                for kind in ORDERS[round_index % len(ORDERS)]:
                    measure(kind, first_septum=kind == "septum" and not runs["septum"])
        plain, septum, iptables = runs["plain"], runs["septum"], runs["iptables"]
        rates = _connection_rates(enforcers, client, server, conn_rounds)
        enforcers.septum_on()
        cost = connaccount.measure(node, lambda: _connections(client, server, 0.5))
        enforcers.septum_off()
        return {
            "iperf_ratio": statistics.median(s / p for s, p in zip(septum, plain, strict=True)),
            "iptables_iperf_ratio": statistics.median(
                i / p for i, p in zip(iptables, plain, strict=True)
            ),
            "new_conn_per_s": statistics.median(rates.septum),
            "iptables_new_conn_per_s": statistics.median(rates.iptables),
            "new_conn_ratio": rates.ratio,
            "new_conn_no_reader_per_s": statistics.median(rates.septum_no_reader),
            "new_conn_no_reader_ratio": rates.no_reader_ratio,
            "new_conn_rounds": float(len(rates.septum)),
            "new_conn_events_ingested": float(rates.ingested),
            "new_conn_lost_events": float(rates.lost),
            "new_conn_ingest_cpu_us": (
                rates.ingest_cpu_s * 1e6 / rates.connections if rates.connections else 0.0
            ),
            "live_ns_per_packet": live[0] / live[1] if live[1] else 0.0,
            "iperf_gbps_plain_median": statistics.median(plain),
            "iperf_gbps_septum_median": statistics.median(septum),
            "iperf_gbps_iptables_median": statistics.median(iptables),
            "datapath_ns_per_conn": cost.ns_per_connection,
            "runs_per_conn": cost.runs_per_connection,
            "stats_ns_per_run": cost.stats_ns_per_run,
            "conn_lost_events": float(cost.lost_events),
            "conn_per_s_with_reader": cost.connections_per_s,
            **{f"events_per_conn: {k}": v for k, v in cost.events_per_connection().items()},
        }
    finally:
        # every step runs, last created first, even when one before it fails
        with ExitStack() as cleanup:
            cleanup.push(cleanup_step(sandbox.close))
            if node is not None:
                cleanup.push(cleanup_step(node.teardown))
            if accepter is not None:
                cleanup.push(cleanup_step(accepter.close))


@dataclass
class ConnectionRates:
    """Interleaved connection-rate runs: per run, Septum's and iptables' connections/s."""

    septum: list[float]
    iptables: list[float]
    ingested: int  # events the agent's ingest took during Septum's runs
    lost: int  # events the kernel could not queue during them
    connections: int = 0  # Septum's, all runs together
    ingest_cpu_s: float = 0.0  # the agent ingest process's CPU time in those runs
    # Septum with nothing reading its events (the ring fills, the rest are counted lost):
    # what the datapath alone gives, reported beside the figure with the agent's ingest.
    septum_no_reader: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median over rounds of Septum's rate over iptables' in the same round."""
        return statistics.median(s / i for s, i in zip(self.septum, self.iptables, strict=True))

    @property
    def no_reader_ratio(self) -> float:
        return statistics.median(
            s / i for s, i in zip(self.septum_no_reader, self.iptables, strict=True)
        )


def _connection_rates(
    enforcers: _Enforcers, client: Pod, server: Pod, rounds: int, seconds: float = 1.0
) -> ConnectionRates:
    """New connections per second under Septum and under iptables+ipset (and Septum with
    no reader): `rounds` rounds of one run each, in every order in turn.  During Septum's
    runs the agent's own flow ingest reads the ring in a process of its own (agentingest),
    as on a node; iptables sends no events, so nothing runs beside it."""
    rates = ConnectionRates([], [], 0, 0)

    def septum_run() -> None:
        enforcers.septum_on()
        lost = enforcers.node.lost_events()
        with agent_ingest_process(enforcers.node, "bench-connrate") as ingest:
            count, elapsed = _connections(client, server, seconds)
        rates.ingested += ingest.ingested
        rates.ingest_cpu_s += ingest.cpu_s
        rates.connections += count
        rates.lost += enforcers.node.lost_events() - lost
        enforcers.septum_off()
        rates.septum.append(count / elapsed)

    def iptables_run() -> None:
        enforcers.iptables_on()
        count, elapsed = _connections(client, server, seconds)
        enforcers.iptables_off()
        rates.iptables.append(count / elapsed)

    def no_reader_run() -> None:
        enforcers.septum_on()
        count, elapsed = _connections(client, server, seconds)
        enforcers.septum_off()
        _drain(enforcers.node)  # the next run's ingest starts from an empty ring
        rates.septum_no_reader.append(count / elapsed)

    # Every order of the three in turn: each kind runs in each place (first, between,
    # last) and after each other kind equally often over six rounds.
    orders = list(itertools.permutations((septum_run, iptables_run, no_reader_run)))
    for round_index in range(rounds):
        for run in orders[round_index % len(orders)]:
            run()
    return rates


# ---- command ----------------------------------------------------------------------------

KEYS = (
    "baseline_ns",
    "established_ns",
    "new_allow_ns",
    "deny_ns",
    "iperf_ratio",
    "iptables_iperf_ratio",
    "new_conn_per_s",
    "iptables_new_conn_per_s",
    "live_ns_per_packet",
)


# issue 17's second part: the datapath's nanoseconds per TCP connection (connaccount)
CONN_KEYS = ("datapath_ns_per_conn",)


@click.command(name="datapath")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--repeats", default=1_000_000, show_default=True, help="BPF_PROG_TEST_RUN repeats per path."
)
@click.option(
    "--singles",
    default=20_000,
    show_default=True,
    help="One-run-per-call test runs per figure in the comparison with Cilium.",
)
@click.option(
    "--peer-rounds",
    default=5,
    show_default=True,
    help="Interleaved Septum/Cilium rounds (figures are medians over rounds).",
)
@click.option(
    "--rounds",
    default=10,
    show_default=True,
    help="Interleaved iperf3 rounds (>= 10 for the ratio).",
)
@click.option("--seconds", default=2, show_default=True, help="Seconds per iperf3 run.")
@click.option(
    "--conn-rounds",
    default=12,
    show_default=True,
    type=click.IntRange(min=1),
    help=(
        "Interleaved 1 s connection-rate rounds: Septum with the agent's ingest, iptables,"
        " Septum without a reader (>= 10 for the ratio; 12 runs each of the 6 orders twice)."
    ),
)
def command(
    as_json: bool,
    repeats: int,
    singles: int,
    peer_rounds: int,
    rounds: int,
    seconds: int,
    conn_rounds: int,
) -> None:
    """Datapath cost per packet (test runs) against Cilium's bpf_lxc, and throughput
    against iptables+ipset."""
    results = microbench(repeats)
    comparison = peercompare.compare(peer_rounds, repeats, singles)
    if comparison.unavailable:
        # one line, on stderr so --json stays one object; the cilium_* keys are null
        click.echo(
            f"septum bench datapath: Cilium peer unavailable ({comparison.unavailable}); "
            "Septum's figures only",
            err=True,
        )
    results.update(throughput(rounds, seconds, conn_rounds))
    if as_json:
        figures: dict[str, float | None] = {key: round(results[key], 3) for key in KEYS}
        for key, value in comparison.json_figures().items():
            figures[key] = None if value is None else round(value, 3)
        for key in CONN_KEYS:
            figures[key] = round(results[key], 3)
        click.echo(json.dumps(figures))
        return
    _print_table(results, comparison)


def _print_table(results: dict[str, float], comparison: peercompare.Comparison) -> None:
    baseline = results["baseline_ns"]
    console = Console()
    table = Table(
        title=f"septum bench datapath ({ENTRIES} ipcache prefixes, {ENTRIES} policy entries)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = {
        "iperf_ratio": ">= 0.95, > iptables",
        "new_conn_per_s": "median of Septum's runs, agent ingest on",
        "iptables_new_conn_per_s": "median of iptables' runs",
    }
    for key in KEYS:
        table.add_row(key, f"{results[key]:.3f}", targets.get(key, ""))
    ratio = results["new_conn_ratio"]
    table.add_row(
        f"new connections/s, Septum / iptables ({results['new_conn_rounds']:.0f} rounds)",
        f"{ratio:.3f}",
        ">= 1.10 " + ("met" if ratio >= 1.10 else "MISSED"),
    )
    table.add_row(
        "the same without any reader: Septum /s, / iptables",
        f"{results['new_conn_no_reader_per_s']:.0f}, {results['new_conn_no_reader_ratio']:.3f}",
        "events lost (ring full)",
    )
    table.add_row(
        "events the agent's ingest took / lost in those runs",
        f"{results['new_conn_events_ingested']:.0f} / {results['new_conn_lost_events']:.0f}",
        "",
    )
    table.add_row(
        "agent ingest CPU per Septum connection (us)",
        f"{results['new_conn_ingest_cpu_us']:.2f}",
        "its process, all threads",
    )
    floor = results["new_allow_floor_ns"]
    table.add_row(
        "new_allow_floor_ns",
        f"{floor:.3f}",
        f"{floor / baseline:.1f}x: map operations + event alone",
    )
    for key in (
        "new_allow_cold_ns",  # fresh random tuples: cold conntrack slots, LRU eviction
        "iperf_gbps_plain_median",
        "iperf_gbps_septum_median",
        "iperf_gbps_iptables_median",
    ):
        table.add_row(key, f"{results[key]:.2f}", "")
    console.print(table)
    console.print(_peer_table(comparison))
    console.print(_connection_table(results))


def _connection_table(results: dict[str, float]) -> Table:
    """Per TCP connection of the connection-rate client (connect, close with RST), both
    pods' interfaces: program runs, their time, and the events (= full-path reports)."""
    table = Table(title="per TCP connection, both pods' interfaces (BPF run-time statistics)")
    table.add_column("measure")
    table.add_column("per connection", justify="right")
    rows = [
        ("datapath_ns_per_conn (statistics' clock reads out)", results["datapath_ns_per_conn"]),
        ("program runs", results["runs_per_conn"]),
        ("statistics' own ns per run (taken out above)", results["stats_ns_per_run"]),
    ]
    rows += [
        (f"event (full path): {key.removeprefix('events_per_conn: ')}", value)
        for key, value in results.items()
        if key.startswith("events_per_conn: ")
    ]
    rows.append(("events lost during the run (total)", results["conn_lost_events"]))
    rows.append(
        ("connections/s during this run (reader taking events)", results["conn_per_s_with_reader"])
    )
    for name, value in rows:
        table.add_row(name, f"{value:.2f}")
    return table


def _peer_table(comparison: peercompare.Comparison) -> Table:
    """Septum beside Cilium's bpf_lxc, both timed the same way in the same minutes."""
    peer = f"Cilium {comparison.cilium_version} bpf_lxc" if comparison.cilium else "Cilium"
    table = Table(
        title=(f"per packet against {peer} ({comparison.rounds} interleaved rounds, medians; ns)")
    )
    for column in ("path", "Septum", peer, "Septum / Cilium", "target"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for row, septum_key, cilium_key, target in peercompare.TARGETS:
        septum = comparison.septum[septum_key]
        cilium = comparison.cilium.get(cilium_key)
        if cilium is None:
            table.add_row(row, f"{septum:.0f}", "unavailable", "", f"<= {target}x")
            continue
        ratio = septum / cilium
        verdict = "met" if ratio <= target else "MISSED"
        table.add_row(
            row, f"{septum:.0f}", f"{cilium:.0f}", f"{ratio:.3f}", f"<= {target}x {verdict}"
        )
    cilium_baseline = comparison.cilium.get("baseline_ns")
    table.add_row(
        "empty tc program (each side's own)",
        f"{comparison.septum['baseline_ns']:.0f}",
        "unavailable" if cilium_baseline is None else f"{cilium_baseline:.0f}",
        "",
        "",
    )
    return table
