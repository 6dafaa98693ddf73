"""The flags of every command that talks to an Observer: --server and hubble's --tls* flags.

Declared once so `septum observe` and `septum status` accept the same set, spelled as the
hubble CLI spells them; `open_channel` turns them into a gRPC channel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import click
import grpc

from septum.cli.hubble.client import DEFAULT_SERVER, ClientTLS, channel, client_tls
from septum.cli.hubble.errors import ClientConfigError

F = TypeVar("F", bound=Callable[..., Any])

_FILE = click.Path(exists=True, dir_okay=False)

# Applied bottom-up, so `--help` lists them in this order.
_OPTIONS = (
    click.option(
        "--server",
        default=DEFAULT_SERVER,
        show_default=True,
        envvar="SEPTUM_SERVER",
        help="Observer address: host:port (default: the relay, as hubble's), tls://host:port, "
        "or one agent's unix:///path.",
    ),
    click.option("--tls", is_flag=True, help="Use TLS to the TCP server."),
    click.option(
        "--tls-allow-insecure",
        is_flag=True,
        help="Skip verifying the server's certificate (refused: grpcio cannot).",
    ),
    click.option(
        "--tls-ca-cert-files",
        multiple=True,
        type=_FILE,
        help="CA certificate(s) to verify the server with (repeatable).",
    ),
    click.option("--tls-client-cert-file", type=_FILE, help="Client certificate (mutual TLS)."),
    click.option("--tls-client-key-file", type=_FILE, help="Client key (mutual TLS)."),
    click.option("--tls-server-name", help="Name to verify in the server's certificate."),
)


def connection_options(command: F) -> F:
    """Add --server and the --tls* flags to a click command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def tls_settings(options: Mapping[str, Any]) -> ClientTLS | None:
    """The --tls* flags as settings (None: plaintext); a combination that cannot work is a
    usage error naming its flag."""
    try:
        return client_tls(
            options["server"],
            tls=options["tls"],
            allow_insecure=options["tls_allow_insecure"],
            ca_files=options["tls_ca_cert_files"],
            cert_file=options["tls_client_cert_file"],
            key_file=options["tls_client_key_file"],
            server_name=options["tls_server_name"],
        )
    except ClientConfigError as err:
        raise click.UsageError(str(err)) from err


def open_channel(options: Mapping[str, Any]) -> grpc.Channel:
    """A channel to --server as the flags ask; a setting that cannot work is a usage error
    naming its flag."""
    tls = tls_settings(options)
    try:
        return channel(options["server"], tls)
    except ClientConfigError as err:
        raise click.UsageError(str(err)) from err
