"""`septum observe`: follow and query flows, with Hubble's flags and outputs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
import grpc

from septum.cli.connection import connection_options, open_channel
from septum.cli.hubble.client import observer_stub
from septum.cli.hubble.errors import FlagError
from septum.cli.hubble.flags import BOOL_FLAGS, VALUE_FLAGS, build_request
from septum.cli.hubble.printer import FORMATS, Printer

_FILTER_HELP = {
    "namespace": "Flows from or to pods in this namespace.",
    "from-namespace": "Flows from pods in this namespace.",
    "to-namespace": "Flows to pods in this namespace.",
    "pod": "Flows from or to this pod ([namespace/]name prefix).",
    "from-pod": "Flows from this pod ([namespace/]name prefix).",
    "to-pod": "Flows to this pod ([namespace/]name prefix).",
    "label": "Flows from or to endpoints matching this label selector.",
    "from-label": "Flows from endpoints matching this label selector.",
    "to-label": "Flows to endpoints matching this label selector.",
    "ip": "Flows from or to this IP or CIDR.",
    "from-ip": "Flows from this IP or CIDR.",
    "to-ip": "Flows to this IP or CIDR.",
    "snat-ip": "Flows SNATed to this IP or CIDR.",
    "fqdn": "Flows from or to this FQDN pattern (*.example.com).",
    "from-fqdn": "Flows from this FQDN pattern.",
    "to-fqdn": "Flows to this FQDN pattern.",
    "identity": "Flows from or to this security identity (number or reserved name).",
    "from-identity": "Flows from this security identity.",
    "to-identity": "Flows to this security identity.",
    "port": "Flows from or to this L4 port.",
    "from-port": "Flows from this L4 port.",
    "to-port": "Flows to this L4 port.",
    "verdict": "FORWARDED, DROPPED, AUDIT, ...",
    "protocol": "tcp, udp, sctp, icmp, icmpv4, icmpv6, http, dns.",
    "type": "Event type: drop, trace[:to-endpoint|...], policy-verdict, or a number.",
    "traffic-direction": "ingress or egress.",
    "node-name": "Node name pattern ([cluster/]name, * wildcards).",
    "http-status": "HTTP status code (404) or class (4+).",
    "http-method": "HTTP method.",
    "http-path": "HTTP path regular expression.",
    "tcp-flags": "TCP flags that must all be set, comma-separated (SYN,ACK).",
    "ip-version": "4 or 6.",
    "http-url": "HTTP URL regular expression.",
    "http-header": "HTTP header, name:value.",
    "dns-query": "DNS query regular expression (l7 DNS flows).",
    "trace-id": "Trace ID (trace context parent).",
    "ip-trace-id": "IP trace ID (from the packet's IP option).",
    "uuid": "Flow UUID.",
    "cel-expression": "CEL expression over _flow, e.g. '_flow.verdict == Verdict.DROPPED'.",
}
_BOOL_HELP = {
    "ipv4": "IPv4 flows only.",
    "ipv6": "IPv6 flows only.",
    "reply": "Replies only.",
    "not-reply": "Non-replies only.",
}


class _OrderedFilters(click.Command):
    """Records filter flags in command-line order: `--not` negates the next one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ordered: list[tuple[str, str | None]] = []
        index = 0
        while index < len(args):
            token = args[index]
            index += 1
            if token == "--":
                break
            if not token.startswith("--"):
                continue
            name, eq, inline = token[2:].partition("=")
            if name == "not":
                ordered.append(("not", None))
            elif name in BOOL_FLAGS:
                ordered.append((name, None))
            elif name in VALUE_FLAGS:
                if eq:
                    ordered.append((name, inline))
                elif index < len(args):
                    ordered.append((name, args[index]))
                    index += 1
        ctx.meta["septum.observe.filters"] = ordered
        return super().parse_args(ctx, args)


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(VALUE_FLAGS):
        command = click.option(
            f"--{name}", multiple=True, metavar="VALUE", help=_FILTER_HELP[name]
        )(command)
    for name in reversed(BOOL_FLAGS):
        command = click.option(f"--{name}", is_flag=True, help=_BOOL_HELP[name])(command)
    return click.option("--not", "negate", count=True, help="Negate the filter flag that follows.")(
        command
    )


@click.command(cls=_OrderedFilters)
@connection_options
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    default="compact",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--color",
    type=click.Choice(("auto", "always", "never")),
    default="auto",
    show_default=True,
    help="Colour compact output (auto: when writing to a terminal).",
)
@click.option("--last", type=int, help="Show the last N flows (default 20 unless following).")
@click.option("--first", type=int, help="Show the first N flows in the buffer.")
@click.option("--all", "all_flows", is_flag=True, help="Every flow in the buffer.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new flows as they happen.")
@click.option("--since", help="Flows since this time (RFC 3339) or duration ago (5m).")
@click.option("--until", help="Flows until this time (RFC 3339) or duration ago (1m).")
@click.option(
    "--timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for the server (not for flows when following).",
)
@_filter_options
@click.pass_context
def observe(ctx: click.Context, /, **options: Any) -> None:
    """Observe flows through Septum's Hubble-compatible Observer API."""
    ordered = ctx.meta.get("septum.observe.filters", [])
    try:
        request = build_request(
            ordered,
            last=options["last"],
            first=options["first"],
            follow=options["follow"],
            since=options["since"],
            until=options["until"],
            all_flows=options["all_flows"],
        )
    except FlagError as err:
        raise click.UsageError(str(err)) from err
    if options["output"] == "table" and options["follow"]:
        raise click.UsageError("flags --output table and --follow cannot be combined")
    colour = {"auto": None, "always": True, "never": False}[options["color"]]
    chan = open_channel(options)
    printer = Printer(options["output"], colour=colour)
    try:
        grpc.channel_ready_future(chan).result(timeout=options["timeout"])
        for response in observer_stub(chan).GetFlows(request):
            printer.response(response)
        printer.close()
    except grpc.FutureTimeoutError:
        raise click.ClickException(
            f"--server {options['server']}: no Observer answered within {options['timeout']:g}s"
        ) from None
    except grpc.RpcError as err:
        code = err.code() if hasattr(err, "code") else None
        details = err.details() if hasattr(err, "details") else str(err)
        raise click.ClickException(f"GetFlows failed ({code}): {details}") from None
    except KeyboardInterrupt:
        printer.close()
    finally:
        chan.close()


if __name__ == "__main__":  # pragma: no cover
    observe(sys.argv[1:])
