"""`septum bench l7`: HTTP through the L7 proxy against direct, in the same run.

Pods as namespaces on a node datapath with the real redirect (the numbers include the socket
assignment and the node's stack twice); a minimal asyncio HTTP/1.1 server in the server pod,
the proxy (septum.agent.l7.httpproxy on uvloop, one process, one event loop: one core at
most; the same proxy on asyncio's own loop is measured too, keep-alive only) in the node
namespace, the load generator in the client pod, each its own process.  Direct = the
client's egress allowed at L3/L4; proxied = the same entry with the L7 proxy port, a rule
``GET /bench/.*``.  Measured: requests/s with keep-alive (closed loop, 8 connections) and with
a new connection per request, and latency at an open-loop 1,000 requests/s on keep-alive
connections (p50, p99; added = proxied - direct).  Then DNS queries per second through the DNS
proxy against direct (septum.bench.dnsqps, in its own namespaces)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from septum.bench import dnsqps
from septum.dataplane import l7redirect
from septum.dataplane.abi import TrafficDirection
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.sandbox import Sandbox

CLIENT_ID, SERVER_ID = 3101, 3103
SERVER_IP = "10.95.0.3"
PORT = 8080
PROXY_PORT = 15004


def _start(ns: str, *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "septum.bench.l7procs", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if line != "ready":
        _stop(process)
        raise click.ClickException(f"bench l7: {args[0]} did not start ({line!r})")
    return process


def _stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)
    if process.stdout:
        process.stdout.close()


def _load(ns: str, *args: str, timeout_s: float = 120) -> dict[str, Any]:
    done = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "septum.bench.l7procs",
            "load",
            SERVER_IP,
            str(PORT),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode:
        raise click.ClickException(f"bench l7: load generator failed: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def _world() -> Iterator[tuple[Sandbox, NodeDatapath]]:
    prefix = f"bl7{secrets.token_hex(2)}"
    sandbox = Sandbox(prefix)
    node: NodeDatapath | None = None
    try:
        node = NodeDatapath(DatapathConfig(node_name=f"b-{prefix}", netns=sandbox.node_ns))
        client = sandbox.add_pod("c", "10.95.0.1")
        server = sandbox.add_pod("s", SERVER_IP)
        node.upsert_endpoint(EndpointSpec(1, client.host_interface, CLIENT_ID, client.ipv4))
        node.upsert_endpoint(EndpointSpec(2, server.host_interface, SERVER_ID, server.ipv4))
        node.upsert_prefixes({f"{client.ipv4}/32": CLIENT_ID, f"{SERVER_IP}/32": SERVER_ID})
        node.replace_policy(
            2,
            EndpointPolicy(
                enforce_ingress=True,
                entries=(PolicyEntry(TrafficDirection.INGRESS, CLIENT_ID, 6, PORT, rule_id=2),),
            ),
        )
        l7redirect.install_proxy_routing(sandbox.node_ns)
        yield sandbox, node
    finally:
        if node is not None:
            node.teardown()
        sandbox.close()


def _client_policy(node: NodeDatapath, proxy_port: int) -> None:
    entry = PolicyEntry(
        TrafficDirection.EGRESS, SERVER_ID, 6, PORT, rule_id=1, l7_proxy_port=proxy_port
    )
    node.replace_policy(1, EndpointPolicy(enforce_egress=True, entries=(entry,)))


def _measure(client_ns: str, seconds: float, rate: int) -> dict[str, Any]:
    keep = _load(client_ns, "--seconds", str(seconds), "--connections", "8")
    fresh = _load(client_ns, "--seconds", str(seconds), "--connections", "8", "--fresh")
    timed = _load(client_ns, "--seconds", str(seconds), "--connections", "16", "--rate", str(rate))
    latencies = timed["latencies_s"]
    return {
        "rps": keep["requests"] / keep["seconds"],
        "conn_rps": fresh["requests"] / fresh["seconds"],
        "p50_ms": _percentile(latencies, 0.50) * 1e3,
        "p99_ms": _percentile(latencies, 0.99) * 1e3,
        "late": timed["late"],
    }


def run(seconds: float, rate: int) -> dict[str, Any]:
    with _world() as (sandbox, node):
        client_ns = f"{sandbox.prefix}-c"
        processes = [
            _start(f"{sandbox.prefix}-s", "server", "0.0.0.0", str(PORT)),
            _start(sandbox.node_ns, "proxy", str(PROXY_PORT), str(CLIENT_ID), "--uvloop"),
        ]
        try:
            _client_policy(node, 0)
            direct = _measure(client_ns, seconds, rate)
            _client_policy(node, PROXY_PORT)
            time.sleep(0.1)
            proxied = _measure(client_ns, seconds, rate)
            # The same proxy on asyncio's own loop: why it runs on uvloop.
            _stop(processes[1])
            processes[1] = _start(sandbox.node_ns, "proxy", str(PROXY_PORT), str(CLIENT_ID))
            plain = _load(client_ns, "--seconds", str(seconds), "--connections", "8")
        finally:
            for process in processes:
                _stop(process)
    dns = dnsqps.measure(seconds)
    return {
        "http_rps_direct": round(direct["rps"]),
        "http_rps_proxied": round(proxied["rps"]),
        "http_rps_proxied_asyncio_loop": round(plain["requests"] / plain["seconds"]),
        "http_conn_rps_direct": round(direct["conn_rps"]),
        "http_conn_rps_proxied": round(proxied["conn_rps"]),
        "http_p50_ms_direct": round(direct["p50_ms"], 3),
        "http_p50_ms_proxied": round(proxied["p50_ms"], 3),
        "http_p99_ms_direct": round(direct["p99_ms"], 3),
        "http_p99_ms_proxied": round(proxied["p99_ms"], 3),
        "http_p50_added_ms_at_1k_rps": round(proxied["p50_ms"] - direct["p50_ms"], 3),
        "http_p99_added_ms_at_1k_rps": round(proxied["p99_ms"] - direct["p99_ms"], 3),
        "open_loop_rate": rate,
        "late_sends": {"direct": direct["late"], "proxied": proxied["late"]},
        **dns,
    }


def _print_table(r: dict[str, Any]) -> None:
    rows = [
        ("requests/s, keep-alive", r["http_rps_direct"], r["http_rps_proxied"]),
        ("requests/s, new connection each", r["http_conn_rps_direct"], r["http_conn_rps_proxied"]),
        (f"p50 ms at {r['open_loop_rate']}/s", r["http_p50_ms_direct"], r["http_p50_ms_proxied"]),
        (f"p99 ms at {r['open_loop_rate']}/s", r["http_p99_ms_direct"], r["http_p99_ms_proxied"]),
    ]
    click.echo(f"{'HTTP/1.1':34} {'direct':>10} {'proxied':>10}")
    for name, direct, proxied in rows:
        click.echo(f"{name:34} {direct:>10} {proxied:>10}")
    share = r["http_rps_proxied"] / r["http_rps_direct"] if r["http_rps_direct"] else 0
    click.echo(
        f"{'requests/s, keep-alive, proxy on asyncio':34} {'':>10} "
        f"{r['http_rps_proxied_asyncio_loop']:>10}"
    )
    click.echo(f"{'DNS answers/s':34} {r['dns_qps_direct']:>10} {r['dns_qps_proxied']:>10}")
    click.echo(f"proxied/direct throughput: {share:.0%} (target >= 30%)")
    click.echo(
        f"added p99 at {r['open_loop_rate']}/s: {r['http_p99_added_ms_at_1k_rps']} ms "
        f"(target <= 1 ms); added p50 {r['http_p50_added_ms_at_1k_rps']} ms"
    )


@click.command("l7")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.5),
    default=3.0,
    show_default=True,
    help="Measured time of each run.",
)
@click.option(
    "--rate",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Open-loop requests/s of the latency runs.",
)
def command(as_json: bool, seconds: float, rate: int) -> None:
    """HTTP through the L7 proxy against direct: requests/s and added latency (p50, p99)."""
    results = run(seconds, rate)
    if as_json:
        click.echo(json.dumps(results))
        return
    _print_table(results)
