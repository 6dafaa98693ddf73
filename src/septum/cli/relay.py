"""`septum relay`: one Hubble Observer endpoint for the whole cluster (see septum.relay)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

from septum.relay.errors import RelayConfigError
from septum.relay.server import DEFAULT_LISTEN_ADDRESS, Relay, RelayConfig, ServerTLS
from septum.relay.service import MergeSettings
from septum.relay.tls import AgentTLS


def _config(
    listen_address: str,
    peer_service: tuple[str, ...],
    agent: tuple[str, ...],
    agent_ca: tuple[str, ...],
    agent_client_cert: str | None,
    agent_client_key: str | None,
    insecure_agents: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    insecure: bool,
    sort_buffer_len: int,
    sort_buffer_lag: float,
    check_interval: float,
) -> RelayConfig:
    agent_tls = None
    if agent_client_cert or agent_client_key or agent_ca:
        if not (agent_client_cert and agent_client_key):
            raise RelayConfigError("--agent-client-cert/--agent-client-key: mutual TLS needs both")
        agent_tls = AgentTLS(
            tuple(Path(ca) for ca in agent_ca), Path(agent_client_cert), Path(agent_client_key)
        )
    server_tls = None
    if tls_cert or tls_key or tls_client_ca:
        if not (tls_cert and tls_key):
            raise RelayConfigError("--tls-cert/--tls-key: the relay's TLS listener needs both")
        server_tls = ServerTLS(
            Path(tls_cert), Path(tls_key), Path(tls_client_ca) if tls_client_ca else None
        )
    return RelayConfig(
        listen_address=listen_address,
        peer_services=peer_service,
        agents=agent,
        agent_tls=agent_tls,
        insecure_agents=insecure_agents,
        server_tls=server_tls,
        insecure=insecure,
        merge=MergeSettings(lag_s=sort_buffer_lag, max_len=sort_buffer_len),
        check_interval_s=check_interval,
    )


async def _serve(relay: Relay) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await relay.start()
    try:
        await stopping.wait()
    finally:
        await relay.stop()


@click.command()
@click.option(
    "--listen-address",
    default=DEFAULT_LISTEN_ADDRESS,
    show_default=True,
    help="host:port (empty host: every address) or unix:///path.",
)
@click.option(
    "--peer-service",
    multiple=True,
    help="An agent's Observer address whose peer.Peer/Notify lists the nodes (repeatable).",
)
@click.option("--agent", multiple=True, help="One agent's Observer address (repeatable).")
@click.option("--agent-ca", multiple=True, help="CA file the agents' certificates chain to.")
@click.option("--agent-client-cert", help="The relay's client certificate towards the agents.")
@click.option("--agent-client-key", help="Its key.")
@click.option(
    "--insecure-agents", is_flag=True, help="Plaintext to the agents (logged as a warning)."
)
@click.option("--tls-cert", help="The relay listener's certificate.")
@click.option("--tls-key", help="Its key.")
@click.option("--tls-client-ca", help="Require client certificates from this CA.")
@click.option("--insecure", is_flag=True, help="Plaintext TCP listener (logged as a warning).")
@click.option(
    "--sort-buffer-len",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Follow mode: flows waiting to be put in time order, at most.",
)
@click.option(
    "--sort-buffer-lag",
    type=click.FloatRange(min=0.0),
    default=0.2,
    show_default=True,
    help="Follow mode: seconds a flow waits for slower agents, at most.",
)
@click.option(
    "--check-interval",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between status checks of a connected agent.",
)
@click.option("--log-level", default="INFO", show_default=True)
def relay(log_level: str, **options: object) -> None:
    """Serve one Hubble Observer for the cluster, merging every agent's flows."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        server = Relay(_config(**options))  # type: ignore[arg-type]
        asyncio.run(_serve(server))
    except RelayConfigError as err:
        raise click.UsageError(str(err)) from err
