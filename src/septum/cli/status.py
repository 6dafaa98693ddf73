"""`septum status`: flows seen, buffer use, lost events and nodes of an Observer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click
import grpc

from septum.cli.connection import connection_options, open_channel
from septum.cli.hubble.client import observer_stub
from septum.dataplane.observe.api.flow import flow_pb2
from septum.dataplane.observe.api.observer import observer_pb2
from septum.dataplane.observe.api.relay import relay_pb2


def _uptime(ns: int) -> str:
    return str(timedelta(seconds=ns // 1_000_000_000))


@click.command()
@connection_options
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait per answer."
)
def status(**options: Any) -> None:
    """Show flows seen, flow buffer use, lost events and nodes."""
    chan = open_channel(options)
    try:
        stub = observer_stub(chan)
        timeout = options["timeout"]
        st = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=timeout)
        nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=timeout).nodes
    except grpc.RpcError as err:
        raise click.ClickException(f"--server {options['server']}: {err.details()}") from None
    finally:
        chan.close()
    use = 100.0 * st.num_flows / st.max_flows if st.max_flows else 0.0
    click.echo(f"Version:          {st.version}")
    click.echo(f"Uptime:           {_uptime(st.uptime_ns)}")
    click.echo(f"Flows seen:       {st.seen_flows:,}")
    click.echo(f"Flow buffer:      {st.num_flows:,}/{st.max_flows:,} ({use:.2f}%)")
    click.echo(f"Flows/s:          {st.flows_rate:.2f}")
    lost = {
        flow_pb2.LostEventSource.Name(e.source).lower(): e.num_events_lost
        for e in st.septum_lost_events
    }
    if lost:
        total = sum(lost.values())
        detail = ", ".join(f"{source}={count}" for source, count in sorted(lost.items()))
        click.echo(f"Lost events:      {total} ({detail})")
    else:
        click.echo("Lost events:      not reported by this server (not Septum)")
    click.echo(f"Nodes:            {len(nodes)}")
    for node in nodes:
        state = relay_pb2.NodeState.Name(node.state)
        click.echo(
            f"  {node.name:<20} {state:<16} {node.address or '-':<22} "
            f"{node.num_flows:,}/{node.max_flows:,} flows, up {_uptime(node.uptime_ns)}"
        )
