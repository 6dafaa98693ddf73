"""`septum bench l7`: HTTP through the L7 proxy against direct, in the same run.

Pods as namespaces on a node datapath with the real redirect (the numbers include the socket
assignment and the node's stack twice).  Direct = the client's egress allowed at L3/L4;
proxied = the same entry with the L7 proxy port, a rule ``GET /bench/.*``, the proxy
(septum.agent.l7.httpproxy on uvloop, one process, one event loop, building the Hubble flows
of every request as the agent does) in the node namespace.

"On one core": the proxy is pinned to one CPU, the peers (the server, a minimal uvloop
responder, and the load generators) to another, so the proxy has one core and no more, and
the peers have the same core in both modes.  Throughput is wrk's (C, one thread, 8
keep-alive connections; and with ``Connection: close``, a new connection per request),
latency the open-loop client's (Python, 1,000 requests/s on 16 keep-alive connections; p50,
p99, added = proxied - direct over all rounds' samples).  Direct and proxied alternate
round by round (ABBA), each figure is the median of the rounds, since the machine is shared;
each process's CPU use is recorded so the table can say what limited each side.  Then the
proxy on asyncio's own loop (why uvloop), then DNS queries per second through the DNS proxy
against direct (septum.bench.dnsqps, in its own namespaces)."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import time
from typing import Any

import click

from septum.bench import dnsqps, nsprocs, proxynode
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.policy import EndpointPolicy, PolicyEntry

CLIENT_ID, SERVER_ID = 3101, 3103
CLIENT_IP, SERVER_IP = "10.95.0.1", "10.95.0.3"
PORT = 8080
PROXY_PORT = 15004
TCP = 6
_PROCS = "septum.bench.l7procs"
_URL = f"http://{SERVER_IP}:{PORT}/bench/item"
CONNECTIONS = 8  # wrk's keep-alive connections


def cpus() -> tuple[int | None, int | None]:
    """(the proxy's CPU, the peers' CPU): the two lowest this process may use; (None, None)
    on a one-CPU machine, where nothing is pinned."""
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def parse_wrk(text: str) -> dict[str, float]:
    """wrk's summary: requests, seconds, socket errors, non-2xx/3xx answers."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if done is None:
        raise click.ClickException(f"bench l7: wrk printed no summary: {text.strip()!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": float(done.group(1)),
        "seconds": float(done.group(2)) * scale,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
        "non_2xx": float(bad.group(1)) if bad else 0.0,
    }


def _wrk(ns: str, seconds: int, cpu: int | None, fresh: bool) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", _URL]
    if fresh:
        argv[1:1] = ["-H", "Connection: close"]
    began = time.monotonic()
    process = subprocess.Popen(
        nsprocs.in_ns(ns, argv, cpu), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    with process.stdout:
        out = process.stdout.read()
    # wait4, not wait: wrk's own CPU time (taskset and ip exec into it: one process).
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - began
    if process.returncode:
        raise click.ClickException(f"bench l7: wrk failed: {out.strip()}")
    result = parse_wrk(out)
    result["cpu_pct"] = round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1)
    if result["non_2xx"] or result["socket_errors"] > result["requests"] / 100:
        raise click.ClickException(f"bench l7: wrk saw errors: {out.strip()}")
    return result


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _server_policy(node: NodeDatapath) -> None:
    entry = PolicyEntry(TrafficDirection.INGRESS, CLIENT_ID, TCP, PORT, rule_id=2)
    node.replace_policy(2, EndpointPolicy(enforce_ingress=True, entries=(entry,)))


class _Usage:
    """CPU seconds of the long-running processes over a stretch of wall time."""

    def __init__(self, processes: dict[str, subprocess.Popen[str]]) -> None:
        self._pids = {name: p.pid for name, p in processes.items()}
        self._start = {name: nsprocs.cpu_seconds(pid) for name, pid in self._pids.items()}
        self._wall = time.monotonic()

    def percent(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall
        return {
            name: round(100 * (nsprocs.cpu_seconds(pid) - self._start[name]) / wall, 1)
            for name, pid in self._pids.items()
        }


class _Placement:
    """Where each process runs: pinned (the proxies to one CPU, the peers to another) for
    the throughput runs, where "on one core" is the question; left to the scheduler for the
    latency runs, where a pinned process waits behind whatever else the shared machine runs
    on its CPU."""

    def __init__(
        self,
        processes: dict[str, subprocess.Popen[str]],
        proxy_cpu: int | None,
        peer_cpu: int | None,
    ) -> None:
        self._processes = processes
        self.proxy_cpu, self.peer_cpu = proxy_cpu, peer_cpu

    def pin(self, pinned: bool) -> None:
        every = os.sched_getaffinity(0)
        for name, process in self._processes.items():
            cpu = self.proxy_cpu if name.startswith("proxy") else self.peer_cpu
            os.sched_setaffinity(process.pid, {cpu} if pinned and cpu is not None else every)


def _throughput(
    node: NodeDatapath,
    client_ns: str,
    placement: _Placement,
    processes: dict[str, subprocess.Popen[str]],
    proxy_port: int,
    seconds: int,
    fresh: bool = True,
) -> dict[str, Any]:
    proxynode.client_egress(node, 1, SERVER_ID, TCP, PORT, proxy_port)
    placement.pin(True)
    usage = _Usage(processes)
    keep = _wrk(client_ns, seconds, placement.peer_cpu, fresh=False)
    cpu_pct = {**usage.percent(), "wrk": keep["cpu_pct"]}
    out: dict[str, Any] = {"rps": keep["requests"] / keep["seconds"], "cpu_pct": cpu_pct}
    if fresh:
        new = _wrk(client_ns, seconds, placement.peer_cpu, fresh=True)
        out["conn_rps"] = new["requests"] / new["seconds"]
    return out


def _latency(
    node: NodeDatapath,
    client_ns: str,
    placement: _Placement,
    proxy_port: int,
    seconds: int,
    rate: int,
) -> dict[str, Any]:
    proxynode.client_egress(node, 1, SERVER_ID, TCP, PORT, proxy_port)
    placement.pin(False)
    args = ["--seconds", str(seconds), "--rate", str(rate)]
    return nsprocs.run_json(
        client_ns, _PROCS, "latency", SERVER_IP, str(PORT), *args, timeout_s=seconds + 60
    )


def _summary(
    throughput: list[dict[str, Any]], latency: list[dict[str, Any]], limiting: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rps": statistics.median(r["rps"] for r in throughput),
        "rps_rounds": [round(r["rps"]) for r in throughput],
        "cpu_pct": {
            name: statistics.median(r["cpu_pct"][name] for r in throughput)
            for name in throughput[0]["cpu_pct"]
        },
    }
    # The share of its core the limiting side used, named by the mode (an idle process's few
    # ticks must never become the denominator): the proxy when proxied, the peers (server and
    # wrk, together on one CPU) when direct.
    busy = [sum(r["cpu_pct"][name] for name in limiting) for r in throughput]
    if all(busy):
        out["per_core"] = statistics.median(
            r["rps"] * 100 / b for r, b in zip(throughput, busy, strict=True)
        )
    if "conn_rps" in throughput[0]:
        out["conn_rps"] = statistics.median(r["conn_rps"] for r in throughput)
    if latency:
        samples = [s for r in latency for s in r["latencies_s"]]
        out["p50_ms"] = _percentile(samples, 0.50) * 1e3
        out["p99_ms"] = _percentile(samples, 0.99) * 1e3
        out["late"] = sum(r["late"] for r in latency)
    return out


# The modes, by the client's egress entry: L3/L4 only, or redirected to one of two proxies
# (the same code; one builds the Hubble flows of every request into a flow ring as the agent
# does, one hands its records to nothing, as a proxy whose flows are built elsewhere).
DIRECT, PROXIED, PROXIED_NO_FLOWS = 0, PROXY_PORT, PROXY_PORT + 1


def run(seconds: int, rate: int, rounds: int = 5, dns: bool = True) -> dict[str, Any]:
    proxy_cpu, peer_cpu = cpus()
    load_before = os.getloadavg()
    with proxynode.proxy_node("bl7") as (sandbox, node):
        client = sandbox.add_pod("c", CLIENT_IP)
        server = sandbox.add_pod("s", SERVER_IP)
        node.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, CLIENT_IP))
        node.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, SERVER_IP))
        node.upsert_prefixes({f"{CLIENT_IP}/32": CLIENT_ID, f"{SERVER_IP}/32": SERVER_ID})
        _server_policy(node)
        client_ns = f"{sandbox.prefix}-c"
        processes: dict[str, subprocess.Popen[str]] = {}
        try:
            processes["server"] = nsprocs.start(
                f"{sandbox.prefix}-s", _PROCS, "server", "0.0.0.0", str(PORT)
            )
            for name, port, extra in (
                ("proxy", PROXIED, ("--flows", CLIENT_IP, SERVER_IP)),
                ("proxy_no_flows", PROXIED_NO_FLOWS, ()),
            ):
                processes[name] = nsprocs.start(
                    sandbox.node_ns, _PROCS, "proxy", str(port), str(CLIENT_ID), *extra
                )
            placement = _Placement(processes, proxy_cpu, peer_cpu)
            rps: dict[int, list[dict[str, Any]]] = {DIRECT: [], PROXIED: [], PROXIED_NO_FLOWS: []}
            lat: dict[int, list[dict[str, Any]]] = {DIRECT: [], PROXIED: []}
            for i in range(rounds):
                order = (DIRECT, PROXIED) if i % 2 == 0 else (PROXIED, DIRECT)  # ABBA
                for mode in order:
                    rps[mode].append(
                        _throughput(node, client_ns, placement, processes, mode, seconds)
                    )
                for mode in order:
                    lat[mode].append(_latency(node, client_ns, placement, mode, seconds, rate))
                rps[PROXIED_NO_FLOWS].append(
                    _throughput(
                        node, client_ns, placement, processes, PROXIED_NO_FLOWS, seconds, False
                    )
                )
            # The same proxy on asyncio's own loop (flows built): why it runs on uvloop.
            nsprocs.stop(processes.pop("proxy"))
            processes["proxy"] = nsprocs.start(
                sandbox.node_ns,
                _PROCS,
                "proxy",
                str(PROXIED),
                str(CLIENT_ID),
                "--asyncio",
                "--flows",
                CLIENT_IP,
                SERVER_IP,
            )
            plain = _throughput(node, client_ns, placement, processes, PROXIED, seconds, False)
        finally:
            for process in processes.values():
                nsprocs.stop(process)
    direct = _summary(rps[DIRECT], lat[DIRECT], ("server", "wrk"))
    proxied = _summary(rps[PROXIED], lat[PROXIED], ("proxy",))
    bare = _summary(rps[PROXIED_NO_FLOWS], [], ("proxy_no_flows",))
    results = {
        "http_rps_direct": round(direct["rps"]),
        "http_rps_proxied": round(proxied["rps"]),
        "http_rps_proxied_share": round(proxied["rps"] / direct["rps"], 3),
        "http_rps_proxied_without_flows": round(bare["rps"]),
        "http_rps_proxied_without_flows_share": round(bare["rps"] / direct["rps"], 3),
        "http_rps_direct_rounds": direct["rps_rounds"],
        "http_rps_proxied_rounds": proxied["rps_rounds"],
        "http_rps_proxied_without_flows_rounds": bare["rps_rounds"],
        # Per CPU-second, an approximation beside the measured share above: requests per
        # second of CPU the proxy process used (its utime + stime), direct per second of CPU
        # the server and wrk (sharing one core) used.  It errs in the proxy's favour: softirq
        # work for the packets wrk sends (the redirect, the proxy socket's receive) mostly runs
        # on the sender's CPU and is charged to wrk, while direct pays all its kernel work in
        # its own denominator.  The headline is http_rps_proxied_share, measured straight.
        "http_rps_proxied_per_proxy_core": round(proxied["per_core"]),
        "http_rps_direct_per_peer_core": round(direct["per_core"]),
        "http_rps_proxied_share_per_core": round(proxied["per_core"] / direct["per_core"], 3),
        "http_rps_proxied_without_flows_per_proxy_core": round(bare["per_core"]),
        "http_rps_proxied_asyncio_loop": round(plain["rps"]),
        "http_conn_rps_direct": round(direct["conn_rps"]),
        "http_conn_rps_proxied": round(proxied["conn_rps"]),
        "http_conn_rps_proxied_share": round(proxied["conn_rps"] / direct["conn_rps"], 3),
        "http_p50_ms_direct": round(direct["p50_ms"], 3),
        "http_p50_ms_proxied": round(proxied["p50_ms"], 3),
        "http_p99_ms_direct": round(direct["p99_ms"], 3),
        "http_p99_ms_proxied": round(proxied["p99_ms"], 3),
        "http_p50_added_ms_at_1k_rps": round(proxied["p50_ms"] - direct["p50_ms"], 3),
        "http_p99_added_ms_at_1k_rps": round(proxied["p99_ms"] - direct["p99_ms"], 3),
        "open_loop_rate": rate,
        "late_sends": {"direct": direct["late"], "proxied": proxied["late"]},
        "cpu_pct_keepalive": {
            "direct": direct["cpu_pct"],
            "proxied": proxied["cpu_pct"],
            "proxied_without_flows": bare["cpu_pct"],
        },
        "cpus": {"proxy": proxy_cpu, "peers": peer_cpu},
        "rounds": rounds,
        "load_average": [round(x, 2) for x in load_before],
    }
    if dns:
        results.update(dnsqps.measure(seconds))
    return results


def _print_table(r: dict[str, Any]) -> None:
    rows = [
        ("requests/s, keep-alive (wrk)", r["http_rps_direct"], r["http_rps_proxied"]),
        ("requests/s, new connection each", r["http_conn_rps_direct"], r["http_conn_rps_proxied"]),
        (f"p50 ms at {r['open_loop_rate']}/s", r["http_p50_ms_direct"], r["http_p50_ms_proxied"]),
        (f"p99 ms at {r['open_loop_rate']}/s", r["http_p99_ms_direct"], r["http_p99_ms_proxied"]),
    ]
    click.echo(f"{'HTTP/1.1':34} {'direct':>10} {'proxied':>10}")
    for name, direct, proxied in rows:
        click.echo(f"{name:34} {direct:>10} {proxied:>10}")
    click.echo(
        f"{'requests/s, keep-alive, no flows':34} {'':>10} "
        f"{r['http_rps_proxied_without_flows']:>10}"
    )
    click.echo(
        f"{'requests/s per CPU-second (limit)':34} {r['http_rps_direct_per_peer_core']:>10} "
        f"{r['http_rps_proxied_per_proxy_core']:>10} "
        f"(no flows {r['http_rps_proxied_without_flows_per_proxy_core']})"
    )
    click.echo(
        f"{'requests/s, keep-alive, on asyncio':34} {'':>10} "
        f"{r['http_rps_proxied_asyncio_loop']:>10}"
    )
    if "dns_qps_direct" in r:
        click.echo(f"{'DNS answers/s':34} {r['dns_qps_direct']:>10} {r['dns_qps_proxied']:>10}")
    cpus_, use = r["cpus"], r["cpu_pct_keepalive"]
    click.echo(
        f"CPUs (requests/s runs): proxy on {cpus_['proxy']}, server and wrk on "
        f"{cpus_['peers']}; latency runs unpinned; median of {r['rounds']} interleaved rounds; "
        f"load average {r['load_average']}"
    )
    for mode, figures in use.items():
        click.echo(
            f"CPU % during keep-alive, {mode}: " + ", ".join(f"{k} {v}" for k, v in figures.items())
        )
    click.echo(
        f"proxied/direct throughput: {r['http_rps_proxied_share']:.0%} with flows "
        f"({r['http_rps_proxied_share_per_core']:.0%} per core), "
        f"{r['http_rps_proxied_without_flows_share']:.0%} without (target >= 30%); rounds "
        f"direct {r['http_rps_direct_rounds']}, proxied {r['http_rps_proxied_rounds']}, "
        f"without flows {r['http_rps_proxied_without_flows_rounds']}"
    )
    click.echo(
        f"proxied/direct, a new connection per request: {r['http_conn_rps_proxied_share']:.0%} "
        "(target >= 30%)"
    )
    click.echo(
        f"added p99 at {r['open_loop_rate']}/s: {r['http_p99_added_ms_at_1k_rps']} ms "
        f"(target <= 1 ms); added p50 {r['http_p50_added_ms_at_1k_rps']} ms"
    )


@click.command("l7")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--seconds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Measured time of each run (whole seconds: wrk's).",
)
@click.option(
    "--rate",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Open-loop requests/s of the latency runs.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Interleaved rounds of direct and proxied (each figure is their median).",
)
@click.option("--no-dns", is_flag=True, help="Leave out the DNS proxy's part.")
def command(as_json: bool, seconds: int, rate: int, rounds: int, no_dns: bool) -> None:
    """HTTP through the L7 proxy against direct: requests/s and added latency (p50, p99)."""
    results = run(seconds, rate, rounds, dns=not no_dns)
    if as_json:
        click.echo(json.dumps(results))
        return
    _print_table(results)
