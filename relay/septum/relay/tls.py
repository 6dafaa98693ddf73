"""How the relay talks to the agents and to its own clients: mutual TLS unless told otherwise.

Towards the agents the relay is a TLS client that presents its certificate (the agents require
it, as Hubble's do) and verifies each agent against the cluster CA under the server name the
agent advertises in its peer notification. Its own listener serves TLS with ALPN h2, verifying
client certificates when a client CA is given. Plaintext is a choice (`--insecure-agents`,
`--insecure`), logged as a warning where the relay starts; a unix socket is never TLS (file
permissions guard it, as they guard the agents' own).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from grpclib.client import Channel
from grpclib.config import Configuration

from septum.dataplane.observe.errors import ServerConfigError
from septum.dataplane.observe.server import TLSFiles
from septum.relay.codec import PassthroughCodec
from septum.relay.errors import RelayConfigError

UNIX_SCHEME = "unix:"


@dataclass(frozen=True)
class Address:
    """Where an Observer listens: a unix socket path, or TCP host and port."""

    unix_path: str | None = None
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix://{self.unix_path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: str, setting: str) -> Address:
    """`unix:///path`, `unix:/path`, `/path`, `host:port` or `[v6]:port`; an error names the
    setting the value came from."""
    if value.startswith(UNIX_SCHEME):
        path = value[len(UNIX_SCHEME) :]
        path = "/" + path.lstrip("/") if path.startswith("//") else path
        if not path:
            raise RelayConfigError(f"{setting}: {value!r} has no socket path")
        return Address(unix_path=path)
    if value.startswith("/"):
        return Address(unix_path=value)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise RelayConfigError(f"{setting}: {value!r} is not host:port or unix:///path")
    return Address(host=host.strip("[]"), port=int(port))


@dataclass(frozen=True)
class AgentTLS:
    """The relay's client certificate and the CA(s) the agents' certificates chain to."""

    ca_files: tuple[Path, ...]
    cert_file: Path
    key_file: Path

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.ca_files:
            raise RelayConfigError("--agent-ca: mutual TLS to the agents needs their CA")
        for ca_file in self.ca_files:
            try:
                context.load_verify_locations(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as err:
                raise RelayConfigError(f"--agent-ca: cannot load {ca_file}: {err}") from err
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as err:
            raise RelayConfigError(
                f"--agent-client-cert/--agent-client-key: cannot load {self.cert_file}, "
                f"{self.key_file}: {err}"
            ) from err
        context.set_alpn_protocols(["h2"])
        return context


def server_ssl_context(cert_file: Path, key_file: Path, client_ca: Path | None) -> ssl.SSLContext:
    """The relay's listener: the agents' own server TLS settings (TLS 1.2+, ALPN h2)."""
    try:
        return TLSFiles(cert_file, key_file, client_ca).ssl_context()
    except ServerConfigError as err:
        raise RelayConfigError(f"--tls-cert/--tls-key/--tls-client-ca: {err}") from err


class AgentDialer:
    """Opens a channel to one agent, with TLS unless plaintext was chosen."""

    def __init__(self, tls: AgentTLS | None) -> None:
        self.tls = tls
        self._context = tls.ssl_context() if tls is not None else None

    @property
    def plaintext(self) -> bool:
        return self._context is None

    def channel(self, address: Address, server_name: str = "") -> Channel:
        codec = PassthroughCodec()
        if address.unix_path is not None:
            return Channel(path=address.unix_path, codec=codec)
        config = Configuration(ssl_target_name_override=server_name or address.host)
        return Channel(address.host, address.port, ssl=self._context, config=config, codec=codec)
