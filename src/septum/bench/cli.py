"""`septum bench` group: one subcommand per benchmark module."""

from __future__ import annotations

import importlib

import click

_BENCHMARKS: dict[str, str] = {
    "datapath": "septum.bench.datapath",
    "policy": "septum.bench.policy",
    "lab": "septum.bench.lab",
    "flows": "septum.bench.flows",
    "relay": "septum.bench.relay",
    "e2e": "septum.bench.e2e",
    "history": "septum.bench.history",
    "ui": "septum.bench.ui",
    "l7": "septum.bench.l7",
}


class _LazyBench(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_BENCHMARKS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _BENCHMARKS.get(cmd_name)
        if module_name is None:
            return None
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            return None
        command = module.command
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyBench)
def bench() -> None:
    """Run a benchmark; each prints a table, or one JSON object with --json."""
