"""`septum ui`: the web UI on port 12000 (as Hubble UI), talking to the relay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from septum.cli.connection import connection_options, tls_settings
from septum.cli.hubble.client import credentials, target
from septum.cli.hubble.errors import ClientConfigError
from septum.ui.errors import AssetsError
from septum.ui.server import DEFAULT_PORT, Upstream, find_assets, make_app


def upstream_from_options(options: dict[str, Any]) -> Upstream:
    """The Observer to forward to, from --server and the --tls* flags (as `septum observe`)."""
    tls = tls_settings(options)
    address = target(options["server"])
    if tls is None:
        return Upstream(address)
    try:
        creds, opts = credentials(tls)
    except ClientConfigError as err:
        raise click.UsageError(str(err)) from err
    return Upstream(address, creds, opts)


@click.command()
@connection_options
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to serve the UI on (Hubble UI's).",
)
@click.option(
    "--assets",
    type=click.Path(file_okay=False),
    help="Directory of the built UI (default: $SEPTUM_UI_ASSETS, the image's, "
    "or the checkout's build/ui).",
)
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    help="The cluster whose policies the Policy view explains and what-ifs (default: "
    "$KUBECONFIG; in a pod without it, the pod's service account; else only -f's).",
)
@click.option(
    "-f",
    "--filename",
    "paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Policy manifests for the Policy view (on top of the cluster with --kubeconfig).",
)
def ui(**options: Any) -> None:
    """Serve the web UI: service map, flows, flow detail and policies, from the relay."""
    from aiohttp import web

    from septum.cli.cluster import IN_CLUSTER, source
    from septum.cli.uipolicy import PolicySource, make_handlers

    upstream = upstream_from_options(options)
    try:
        assets = find_assets(options["assets"])
    except AssetsError as err:
        raise click.UsageError(str(err)) from err
    kubeconfig = options["kubeconfig"]
    policies = PolicySource(
        tuple(options["paths"]),
        kubeconfig,
        options["server"],
        in_cluster=kubeconfig is None and source(None) == IN_CLUSTER,
        tls=tls_settings(options),
    )
    app = make_app(assets, upstream, make_handlers(policies))
    click.echo(f"septum ui: http://{options['address']}:{options['port']}/ -> {options['server']}")
    web.run_app(
        app, host=options["address"], port=options["port"], print=None, shutdown_timeout=2.0
    )
