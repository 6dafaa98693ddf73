"""Entry point of the `septum` CLI.

Each command group lives in its own module so that the parts of Septum can
grow independently; this module only assembles them.
"""

from __future__ import annotations

import importlib

import click

# (module, attribute) of every top-level command. Each module owns one command
# or group; imports are lazy so `septum --help` stays fast and a broken optional
# part cannot take the whole CLI down with an ImportError at start-up.
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("septum.cli.demo", "demo"),
    "datapath-demo": ("septum.cli.datapathdemo", "datapath_demo"),
    "uninstall-hook": ("septum.cli.uninstallhook", "uninstall_hook"),
    "lab": ("septum.cli.lab", "lab"),
    "observe": ("septum.cli.observe", "observe"),
    "operator": ("septum.cli.operator", "operator"),
    "status": ("septum.cli.status", "status"),
    "policy": ("septum.cli.policy", "policy"),
    "bench": ("septum.bench.cli", "bench"),
    "agent": ("septum.cli.agent", "agent"),
    "relay": ("septum.cli.relay", "relay"),
    "port-forward": ("septum.cli.portforward", "port_forward"),
    "ui": ("septum.cli.ui", "ui"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            return None
        command = getattr(module, attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="septum")
def cli() -> None:
    """Septum: Kubernetes network policy and flow observability on eBPF."""


def main() -> None:
    cli()
