"""The relay process: peer manager, Observer and health on one grpclib server, one event loop.

`Relay` is the asyncio object (`septum relay` runs it with asyncio.run); `RelayThread` runs
one on a loop of its own for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

from grpclib.server import Server

from septum.dataplane.observe.node import septum_version
from septum.relay.codec import PassthroughCodec
from septum.relay.errors import RelayConfigError
from septum.relay.health import RelayHealth
from septum.relay.merge import SortBuffer
from septum.relay.peers import Backoff, PeerManager
from septum.relay.service import MergeSettings, RelayObserver
from septum.relay.tls import AgentDialer, AgentTLS, parse_address, server_ssl_context

log = logging.getLogger(__name__)

DEFAULT_LISTEN_ADDRESS = ":4245"
_TRANSPORT_CLOSE_S = 0.1


@dataclass(frozen=True)
class ServerTLS:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # set: clients must present a certificate


@dataclass(frozen=True)
class RelayConfig:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    peer_services: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    agent_tls: AgentTLS | None = None
    insecure_agents: bool = False  # plaintext to the agents: must be chosen, is logged
    server_tls: ServerTLS | None = None
    insecure: bool = False  # plaintext to the relay's clients: must be chosen, is logged
    merge: MergeSettings = field(default_factory=MergeSettings)
    check_interval_s: float = 5.0
    call_timeout_s: float = 2.0
    backoff: Backoff = field(default_factory=Backoff)
    version: str = ""  # ServerStatus.version; empty: septum-relay v<package version>

    def validate(self) -> None:
        if not self.peer_services and not self.agents:
            raise RelayConfigError("--peer-service/--agent: give at least one agent to start from")
        if self.agent_tls is None and not self.insecure_agents:
            raise RelayConfigError(
                "--agent-ca/--agent-client-cert/--agent-client-key: mutual TLS to the agents "
                "needs them (or choose plaintext with --insecure-agents)"
            )
        if self.agent_tls is not None and self.insecure_agents:
            raise RelayConfigError("--insecure-agents: not with --agent-client-cert")
        listen = parse_address(self.listen_address, "--listen-address")
        if listen.unix_path is None and self.server_tls is None and not self.insecure:
            raise RelayConfigError(
                "--tls-cert/--tls-key: the relay's TCP listener needs them "
                "(or choose plaintext with --insecure)"
            )
        if self.server_tls is not None and self.insecure:
            raise RelayConfigError("--insecure: not with --tls-cert")
        SortBuffer(int(self.merge.lag_s * 1e9), self.merge.max_len)  # checks max_len


class Relay:
    def __init__(self, config: RelayConfig) -> None:
        config.validate()
        self.config = config
        seeds = [("--peer-service", a) for a in config.peer_services]
        seeds += [("--agent", a) for a in config.agents]
        self.peers = PeerManager(
            seeds,
            AgentDialer(config.agent_tls),
            check_interval_s=config.check_interval_s,
            call_timeout_s=config.call_timeout_s,
            backoff=config.backoff,
        )
        version = config.version or f"septum-relay v{septum_version()}"
        self.observer = RelayObserver(self.peers, config.merge, version=version)
        self.health = RelayHealth()
        self._server: Server | None = None
        self.port: int | None = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.server_tls
        if tls is None:
            return None
        return server_ssl_context(tls.cert_file, tls.key_file, tls.client_ca_file)

    async def start(self) -> None:
        config = self.config
        if config.insecure_agents:
            log.warning(
                "relay to agents is PLAINTEXT (--insecure-agents): flows cross the network "
                "unencrypted and the agents are not authenticated"
            )
        listen = parse_address(config.listen_address, "--listen-address")
        server = Server([self.observer, self.health], codec=PassthroughCodec())
        try:
            if listen.unix_path is not None:
                Path(listen.unix_path).unlink(missing_ok=True)
                await server.start(path=listen.unix_path)
                mode = "unix socket"
            else:
                context = self._ssl_context()
                # Bound here, not by grpclib, so the port asked as 0 is known.
                family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
                sock = socket.create_server((listen.host, listen.port), family=family)
                self.port = int(sock.getsockname()[1])
                await server.start(sock=sock, ssl=context)
                mode = "PLAINTEXT" if context is None else "TLS"
                if context is not None and config.server_tls and config.server_tls.client_ca_file:
                    mode = "mutual TLS"
        except OSError as err:
            raise RelayConfigError(
                f"--listen-address: cannot listen on {config.listen_address}: {err.strerror}"
            ) from err
        self._server = server
        if mode == "PLAINTEXT":
            log.warning(
                "relay listener %s is PLAINTEXT (--insecure): flows are readable by anyone "
                "who can reach it",
                config.listen_address,
            )
        log.info("relay listening on %s (%s)", config.listen_address, mode)
        self.peers.start()

    async def stop(self, grace_s: float = 1.0) -> None:
        self.health.serving = False
        await self.peers.stop()
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), grace_s)
            except TimeoutError:
                log.info("relay: calls still open after %.1f s of grace were cut", grace_s)
            self._server = None
        # Closed transports close their sockets on the loop's next turns, a TLS one after
        # its close_notify exchange: give them a moment before the loop stops.
        await asyncio.sleep(_TRANSPORT_CLOSE_S)

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()


class RelayThread:
    """A Relay on its own event loop in a thread (tests, benchmarks)."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="relay", daemon=True)
        self.relay: Relay | None = None

    def start(self) -> Relay:
        self._thread.start()

        async def create() -> Relay:
            relay = Relay(self.config)
            await relay.start()
            return relay

        self.relay = asyncio.run_coroutine_threadsafe(create(), self.loop).result(30)
        return self.relay

    def stop(self) -> None:
        if self.relay is not None:
            asyncio.run_coroutine_threadsafe(self.relay.stop(), self.loop).result(30)
            self.relay = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
