"""`septum lab`: bring the lab (a real control plane, nodes and pods as namespaces) up and down."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(func: F) -> F:
    """Lab errors become one clear line on stderr and exit status 1."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from septum.lab.errors import LabError

        try:
            return func(*args, **kwargs)
        except LabError as err:
            click.echo(f"septum lab: {err}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group()
def lab() -> None:
    """The lab: a real Kubernetes control plane with nodes and pods as network namespaces."""


@lab.command()
@click.option(
    "--nodes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 200),
    help="Number of lab nodes.",
)
@_one_line_errors
def up(nodes: int) -> None:
    """Start the lab (idempotent) and print the kubeconfig path when ready."""
    from septum.lab import lab as lab_mod

    started = lab_mod.up(nodes, progress=lambda msg: click.echo(f"- {msg}", err=True))
    click.echo(str(started.kubeconfig))


@lab.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_one_line_errors
def status(as_json: bool) -> None:
    """Show the lab's processes and nodes."""
    from septum.lab import lab as lab_mod

    info = lab_mod.status()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"kubeconfig: {info['kubeconfig']}\napiserver:  {info['apiserver']}")
    nodes = Table("node", "ready", "address", "pod CIDR", title="nodes")
    for n in info["nodes"]:
        nodes.add_row(n["name"], n["ready"], n["address"], n["podCIDR"])
    console.print(nodes)
    table = Table("process", "state", "restarts", title="processes")
    for name, alive in sorted(info["processes"].items()):
        table.add_row(
            name, "running" if alive else "[red]exited[/red]", str(info["restarts"].get(name, 0))
        )
    console.print(table)


@lab.command()
@_one_line_errors
def kubeconfig() -> None:
    """Print the path of the lab's admin kubeconfig."""
    from septum.lab import lab as lab_mod

    click.echo(str(lab_mod.current().kubeconfig))


@lab.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_one_line_errors
def exec(pod: str, command: tuple[str, ...]) -> None:  # noqa: A001 - the user-facing verb
    """Run COMMAND inside POD's network namespace (POD is NAMESPACE/NAME)."""
    from septum.lab import lab as lab_mod
    from septum.lab.podexec import exec_argv

    args = list(command)
    if args and args[0] == "--":  # click keeps the separator once POD has been consumed
        args = args[1:]
    if not args:
        raise click.UsageError("COMMAND is missing: septum lab exec NAMESPACE/POD -- CMD...")
    argv = exec_argv(lab_mod.current(), pod, args)
    sys.stdout.flush()
    # Replacing this process lets output, signals and the exit status pass straight through.
    os.execvp(argv[0], argv)


@lab.command()
@_one_line_errors
def down() -> None:
    """Stop the lab and remove everything it created."""
    from septum.lab import lab as lab_mod

    lab_mod.down()
    click.echo("lab down: nothing left behind", err=True)
