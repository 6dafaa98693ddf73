"""`septum datapath-demo`: the datapath alone, no cluster: three pods, one allowed to reach a
server, one dropped. (`septum demo` walks the whole product on the lab.)

Creates a node namespace and three pods (network namespaces on veth pairs), attaches the
datapath, applies one ingress policy to the server ("frontend may reach backend on TCP
8080"), shows the connection that succeeds and the one that is dropped, prints the flow
events as a table, and removes everything it created, also on Ctrl-C or failure.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from contextlib import ExitStack

import click
from rich.console import Console
from rich.table import Table

from septum.dataplane.abi import (
    DropReason,
    TcpFlag,
    TrafficDirection,
    Verdict,
    describe_drop_reason,
)
from septum.dataplane.cleanup import cleanup_step
from septum.dataplane.config import DatapathConfig
from septum.dataplane.datapath import EndpointSpec, NodeDatapath
from septum.dataplane.errors import DatapathError
from septum.dataplane.events import Flow
from septum.dataplane.policy import EndpointPolicy, PolicyEntry
from septum.dataplane.prereq import DEFAULT_OBJECT, require_all
from septum.dataplane.sandbox import Sandbox, TcpServer, tcp_connect

PODS = {  # name: (address, security identity, endpoint id)
    "frontend": ("10.250.0.1", 1001, 1),
    "intruder": ("10.250.0.2", 1002, 2),
    "backend": ("10.250.0.3", 1003, 3),
}
PORT = 8080
RULE_ID = 1
_VERDICT_STYLE = {Verdict.FORWARDED: "green", Verdict.DROPPED: "red", Verdict.AUDIT: "yellow"}


def _flags(value: int) -> str:
    return ",".join(flag.name or "" for flag in TcpFlag if value & flag) or "-"


def _flow_table(flows: list[Flow], names: dict[str, str]) -> Table:
    table = Table(title="flow events (ring buffer)")
    columns = ("time", "source", "destination", "verdict", "reason", "direction", "tcp", "rule")
    for column in columns:
        table.add_column(column, no_wrap=True)
    start = flows[0].time_ns if flows else 0
    for flow in flows:
        verdict = Verdict(flow.verdict)
        reason = "" if flow.drop_reason == DropReason.NONE else DropReason(flow.drop_reason).name
        table.add_row(
            f"+{(flow.time_ns - start) / 1e6:.1f}ms",
            f"{names.get(flow.src_ip, flow.src_ip)}:{flow.src_port}",
            f"{names.get(flow.dst_ip, flow.dst_ip)}:{flow.dst_port}",
            f"[{_VERDICT_STYLE.get(verdict, 'white')}]{verdict.name}[/]",
            reason,
            TrafficDirection(flow.direction).name.lower() + (" reply" if flow.is_reply else ""),
            _flags(flow.tcp_flags),
            str(flow.rule_id or ""),
        )
    return table


def _collect(node: NodeDatapath, want_drop: bool) -> list[Flow]:
    """Events until the intruder's drop has been reported (deadline: 5 s)."""
    flows: list[Flow] = []
    deadline = time.monotonic() + 5
    while (left := deadline - time.monotonic()) > 0:
        flows.extend(node.read_flows(timeout_s=min(left, 0.2)))
        if not want_drop or any(f.verdict == Verdict.DROPPED for f in flows):
            flows.extend(node.read_flows(timeout_s=0.0))
            break
    return flows


def _on_cleanup_failure(console: Console, failures: list[Exception]) -> Callable[[Exception], None]:
    def noted(failure: Exception) -> None:
        failures.append(failure)
        console.print(f"[red]cleanup failed[/]: {failure}")

    return noted


def _report_cleanup(console: Console, failures: list[Exception]) -> None:
    if not failures:
        console.print("[dim]cleaned up: namespaces, links, programs and pins removed[/]")


@click.command(name="datapath-demo")
def datapath_demo() -> None:
    """Three pods, one policy: one connection allowed, one dropped, the flows shown."""
    # the flow table needs about 110 columns; wider than a default 80-column pipe
    console = Console(width=max(Console().width, 120))
    suffix = secrets.token_hex(2)
    failures: list[Exception] = []
    try:
        # Everything is registered as soon as it exists and closed last first, each step
        # even when one before it failed (see septum.dataplane.cleanup).
        with ExitStack() as cleanup:
            require_all(DEFAULT_OBJECT)  # one clear line (root? `make bpf`?) before any netns
            sandbox = Sandbox(f"sdpd{suffix}")
            cleanup.callback(_report_cleanup, console, failures)
            cleanup.push(cleanup_step(sandbox.close, _on_cleanup_failure(console, failures)))
            pods = {
                name: sandbox.add_pod(name[:3], address) for name, (address, _, _) in PODS.items()
            }
            node = NodeDatapath(DatapathConfig(node_name=f"demo-{suffix}", netns=sandbox.node_ns))
            cleanup.push(cleanup_step(node.teardown, _on_cleanup_failure(console, failures)))
            node.upsert_prefixes({f"{a}/32": identity for a, identity, _ in PODS.values()})
            for name, (address, identity, endpoint_id) in PODS.items():
                node.upsert_endpoint(
                    EndpointSpec(endpoint_id, pods[name].host_interface, identity, address)
                )
            console.print(
                f"[bold]node[/] {sandbox.node_ns}: pods "
                + ", ".join(f"{n} ({a}, identity {i})" for n, (a, i, _) in PODS.items())
            )
            allow = PolicyEntry(
                TrafficDirection.INGRESS, PODS["frontend"][1], 6, PORT, rule_id=RULE_ID
            )
            node.replace_policy(PODS["backend"][2], EndpointPolicy.selecting([allow]))
            console.print(
                f"[bold]policy[/] backend ingress: allow identity {allow.peer_identity} "
                f"on TCP {PORT} (rule {RULE_ID}); everything else is denied"
            )
            server = TcpServer(pods["backend"].name, PODS["backend"][0], PORT)
            cleanup.push(cleanup_step(server.close, _on_cleanup_failure(console, failures)))
            backend = PODS["backend"][0]
            for client in ("frontend", "intruder"):
                ok = tcp_connect(pods[client].name, backend, PORT, timeout_s=1.0)
                mark = "[green]connected[/]" if ok else "[red]dropped (timed out)[/]"
                console.print(f"  {client} -> backend:{PORT}  {mark}")
            names = {address: name for name, (address, _, _) in PODS.items()}
            flows = _collect(node, want_drop=True)
            console.print(_flow_table(flows, names))
            counters = node.counters()
            dropped = sum(v.packets for k, v in counters.items() if k.verdict == Verdict.DROPPED)
            forwarded = sum(
                v.packets for k, v in counters.items() if k.verdict == Verdict.FORWARDED
            )
            console.print(f"[bold]counters[/] forwarded {forwarded} packets, dropped {dropped}")
            for flow in flows:
                if flow.verdict == Verdict.DROPPED:
                    who = names.get(flow.src_ip, flow.src_ip)
                    console.print(
                        f"[bold]why[/] {who} was dropped: {describe_drop_reason(flow.drop_reason)}"
                    )
                    break
    except DatapathError as err:
        raise click.ClickException(str(err)) from err
