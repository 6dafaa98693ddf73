"""`septum uninstall-hook`: the chart's pre-delete hook (see septum.operator.uninstallhook)."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from septum.operator.errors import OperatorError
from septum.operator.kube import connect, pod_namespace
from septum.operator.owner import Owner
from septum.operator.uninstallhook import HookPlan, run


@click.command(name="uninstall-hook")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None,
              help="Kubeconfig file; without it, the in-cluster service account.")  # fmt: skip
@click.option("--namespace", default=None, help="The release namespace (default: this pod's).")
@click.option("--daemonset", "daemonsets", multiple=True, default=("septum-agent",),
              show_default=True, help="Agents' DaemonSet, stopped first (repeatable).")  # fmt: skip
@click.option("--deployment", "deployments", multiple=True, default=("septum-operator",),
              show_default=True, help="Stopped after the agents (repeatable).")  # fmt: skip
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=120.0,
              show_default=True, help="Seconds each workload may take to stop.")  # fmt: skip
def uninstall_hook(
    kubeconfig: str | None,
    namespace: str | None,
    daemonsets: tuple[str, ...],
    deployments: tuple[str, ...],
    timeout_s: float,
) -> None:
    """Stop Septum's agents, then its operator, so that each cleans up with its RBAC intact."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    ns = namespace or pod_namespace()
    owners = tuple(Owner("daemonsets", ns, n) for n in daemonsets) + tuple(
        Owner("deployments", ns, n) for n in deployments
    )

    async def main() -> None:
        connection = await connect(Path(kubeconfig) if kubeconfig else None)
        async with connection.api_client() as api:
            await run(api, HookPlan(owners, timeout_s))

    try:
        asyncio.run(main())
    except OperatorError as err:
        click.echo(f"septum uninstall-hook: {err}", err=True)
        sys.exit(1)
